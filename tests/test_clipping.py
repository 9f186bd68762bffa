"""Gradient clipping and L2 decay of the trainer's optimizer groups (dmltf/training/optim.py): they act
on the global-batch gradient, so N replicas update as one device; ``--clip_grad_steps`` limits
clipping to the first iterations (GeDML's clip-once); the schedule may start after the warm-up."""
import numpy as np
import pytest
import tensorflow as tf

import config
from dmltf.methods import OptimizerGroup
from dmltf.training.optim import GroupOptimizer, schedule_factor

INITIAL = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
# Two replicas' shares of one gradient: their sum is what one device sees.
SHARES = np.array([[3.0, 0.5, -0.2, 1.0], [1.0, -2.5, 0.1, 0.5]], np.float32)


def numpy_update(total, *, clip_value=0.0, clip_norm=0.0, l2=0.0, lr=1.0):
    """Plain SGD on the summed gradient, clipped as torch.nn.utils.clip_grad_{value,norm}_ and
    then decayed as torch's SGD(weight_decay) (inside step(), after clipping)."""
    g = total.astype(np.float64)
    if clip_value:
        g = np.clip(g, -clip_value, clip_value)
    if clip_norm:
        g = g * min(1.0, clip_norm / np.linalg.norm(g))
    g = g + l2 * INITIAL
    return INITIAL - lr * g


def make(strategy, **flags):
    cfg = config.make(optimizer="sgd", momentum=0.0, lr=1.0, weight_decay=flags.pop("l2", 0.0), **flags)
    with strategy.scope():
        variable = tf.Variable(INITIAL)
        group = GroupOptimizer(OptimizerGroup("g", [variable]), cfg)
    return variable, group


def apply_shares(strategy, group, shares, step):
    @tf.function
    def run():
        def replica():
            ctx = tf.distribute.get_replica_context()
            group.apply([tf.gather(tf.constant(shares), ctx.replica_id_in_sync_group)], group.clips_at(step))
        strategy.run(replica)
    run()


CASES = [dict(clip_norm=1.0), dict(clip_value=0.7), dict(clip_value=0.7, clip_norm=0.5),
         dict(clip_norm=1.0, l2=0.1), dict(l2=0.1)]


def _flags(case):
    return {"clip_grad_norm": case.get("clip_norm", 0.0), "clip_grad_value": case.get("clip_value", 0.0),
            "weight_decay_mode": "l2", "l2": case.get("l2", 0.0)}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_one_device_clips_the_gradient(case):
    strategy = tf.distribute.get_strategy()
    variable, group = make(strategy, **_flags(case))
    apply_shares(strategy, group, SHARES.sum(0, keepdims=True), 0)
    expected = numpy_update(SHARES.sum(0), **case)
    if "clip_norm" in case or "clip_value" in case:  # the clipping bites
        assert np.abs(expected - numpy_update(SHARES.sum(0), l2=case.get("l2", 0.0))).max() > 0.1
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_two_replicas_clip_and_decay_as_one_device(case):
    """Keras optimizers clip each replica's share before the sum (a different update); the groups
    clip the sum. L2 decay is added once, not once per replica."""
    # Reduction through one device, not collectives: a second strategy's collective keys would
    # restart where this one's began and clash with the mirrored trainer tests in this process.
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert strategy.num_replicas_in_sync == 2
    variable, group = make(strategy, **_flags(case))
    apply_shares(strategy, group, SHARES, 0)
    np.testing.assert_allclose(variable.numpy(), numpy_update(SHARES.sum(0), **case), rtol=1e-5, atol=1e-6)


def test_clip_grad_steps_clips_only_the_first_iterations():
    strategy = tf.distribute.get_strategy()
    variable, group = make(strategy, clip_grad_norm=1.0, clip_grad_steps=1)
    total = SHARES.sum(0, keepdims=True)
    apply_shares(strategy, group, total, 0)
    after_first = numpy_update(SHARES.sum(0), clip_norm=1.0)
    np.testing.assert_allclose(variable.numpy(), after_first, rtol=1e-5)
    apply_shares(strategy, group, total, 1)  # step 1: no longer clipped
    np.testing.assert_allclose(variable.numpy(), after_first - SHARES.sum(0), rtol=1e-5)


def test_negative_clip_grad_steps_is_refused():
    with pytest.raises(ValueError, match="--clip_grad_steps must be >= 0"):
        make(tf.distribute.get_strategy(), clip_grad_norm=1.0, clip_grad_steps=-1)


def test_the_schedule_can_start_after_the_warmup():
    """GeDML steps no scheduler in its warm-up epochs: StepLR(10) then decays at epochs 11, 21, ..."""
    base = dict(schedule="step", lr_step_size=10, lr_gamma=0.5, warmup_epochs=1)
    plain, after = config.make(**base), config.make(**base, lr_schedule_after_warmup=True)
    assert [schedule_factor(plain, e) for e in (0, 9, 10, 11, 20)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert [schedule_factor(after, e) for e in (0, 9, 10, 11, 20, 21)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_clipping_under_float16_loss_scaling_acts_on_the_unscaled_gradient():
    """The groups see gradients times the loss scale: the thresholds scale with it."""
    strategy = tf.distribute.get_strategy()
    variable, group = make(strategy, clip_grad_norm=1.0, clip_grad_value=0.7, precision="mixed_float16")
    scale = float(group.optimizer.dynamic_scale.numpy())
    assert scale > 1
    apply_shares(strategy, group, SHARES.sum(0, keepdims=True) * scale, 0)
    np.testing.assert_allclose(variable.numpy(), numpy_update(SHARES.sum(0), clip_value=0.7, clip_norm=1.0),
                               rtol=1e-5, atol=1e-6)
