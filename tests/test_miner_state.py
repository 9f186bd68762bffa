"""Miners are tracked Keras state: a sampling miner's seed generator is checkpointed with the loss
that holds it, so ``--resume`` continues its draws, and replicas draw what one device draws."""
import keras
import numpy as np
import tensorflow as tf

import config
from dmltf import losses, miners
from dmltf.training.experiment import build_trainer

LABELS = np.repeat(np.arange(3), 4)
EMBEDDINGS = tf.math.l2_normalize(np.random.default_rng(0).normal(size=(12, 8)).astype("float32"), axis=1)


def seed_state(miner):
    return miner.seed_generator.state.numpy()


def test_seed_state_round_trips_through_a_checkpoint_of_the_loss(tmp_path):
    loss = losses.get("margin", miner=miners.get("distance_weighted", seed=3))
    loss(LABELS, EMBEDDINGS)
    loss(LABELS, EMBEDDINGS)
    path = tf.train.Checkpoint(loss=loss).save(str(tmp_path / "ckpt"))
    assert "loss/miner/seed_generator_state/.ATTRIBUTES/VARIABLE_VALUE" in dict(tf.train.list_variables(path))
    restored = losses.get("margin", miner=miners.get("distance_weighted", seed=99))
    tf.train.Checkpoint(loss=restored).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(seed_state(restored.miner), seed_state(loss.miner))
    np.testing.assert_array_equal(seed_state(loss.miner), [3, 2])
    # The restored miner draws what the original draws next.
    expected, again = loss.miner(LABELS, EMBEDDINGS), restored.miner(LABELS, EMBEDDINGS)
    np.testing.assert_array_equal(np.asarray(again.negative), np.asarray(expected.negative))


def test_the_seed_state_is_a_variable_of_the_loss_not_a_weight():
    loss = losses.get("margin", miner=miners.get("distance_weighted", seed=3), learn_beta=True)
    assert [v.path for v in loss.variables if "seed" in v.path] == [loss.miner.seed_generator.state.path]
    assert [v.name for v in loss.weights] == ["beta"]  # .keras files and optimizer groups are unchanged


def test_loss_config_round_trips_with_its_miner():
    loss = losses.get("margin", miner=miners.get("distance_weighted", cutoff=0.4, seed=3, distance="cosine"))
    again = losses.get(keras.saving.serialize_keras_object(loss))
    assert isinstance(again.miner, miners.get_class("distance_weighted"))
    assert again.miner.get_config() == loss.miner.get_config() and again.get_config() == loss.get_config()
    assert loss.get_config()["miner"] == {
        "name": "distance_weighted",
        "config": {"distance": "cosine", "cutoff": 0.4, "nonzero_loss_cutoff": 1.4, "seed": 3},
    }


@keras.saving.register_keras_serializable(package="dmltf_tests")
class MarginHolder(keras.Model):
    """A model holding a margin loss (learned beta, a sampling miner), saved as .keras."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.metric_loss = losses.get("margin", miner=miners.get("distance_weighted", seed=3), learn_beta=True)

    def call(self, inputs):
        return inputs


def test_keras_saving_of_a_model_holding_the_loss_is_unaffected(tmp_path):
    model = MarginHolder()
    model.metric_loss(LABELS, EMBEDDINGS)  # builds the loss
    model(np.zeros((1, 8), "float32"))
    model.metric_loss.beta.assign([2.5])
    path = str(tmp_path / "holder.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored.metric_loss.beta.numpy(), [2.5])
    assert restored.metric_loss.miner.get_config() == model.metric_loss.miner.get_config()


def test_replicas_advance_their_copies_of_the_seed_state_alike():
    """The state variable (aggregation "none") is updated per replica in a replica context: every
    replica reads and increments its own copy, so the replicas draw what one device draws, and
    their copies stay equal to one device's state."""
    def build():
        return losses.get("margin", miner=miners.get("distance_weighted", seed=5))

    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]])
    with strategy.scope():
        mirrored_loss = build()
    one_device = build()

    @tf.function
    def mirrored_draws():
        return strategy.run(lambda: mirrored_loss.miner(LABELS, EMBEDDINGS).negative)

    for _ in range(2):
        expected = np.asarray(one_device.miner(LABELS, EMBEDDINGS).negative)
        for drawn in strategy.experimental_local_results(mirrored_draws()):
            np.testing.assert_array_equal(drawn.numpy(), expected)
    copies = strategy.experimental_local_results(mirrored_loss.miner.seed_generator.state.value)
    assert len(copies) == 2
    for copy in copies:
        np.testing.assert_array_equal(copy.numpy(), seed_state(one_device.miner))
    np.testing.assert_array_equal(seed_state(one_device.miner), [5, 2])


def small_cfg(tmp_path, **overrides):
    base = dict(
        dataset="digits", backbone="small_cnn", embedding_dim=16, classes_per_batch=10, samples_per_class=4,
        epochs=1, max_steps_per_epoch=3, eval_every=0, progress="none", export=False, logdir=str(tmp_path),
        tb_neighbours=0, tb_projector_points=0, optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.05,
        loss="margin", miner="distance_weighted",
    )
    base.update(overrides)
    return config.make(**base)


def miner_of(trainer):
    return trainer.method.loss_layers()[0].miner


def test_resume_after_kill_continues_the_miner_draws_exactly(tmp_path):
    full = build_trainer(small_cfg(tmp_path / "full", epochs=2))
    full.fit()
    first = build_trainer(small_cfg(tmp_path / "resumed", epochs=1))
    first.fit()
    del first  # the "killed" process
    resumed = build_trainer(small_cfg(tmp_path / "resumed", epochs=2, resume=True))
    miner_of(resumed).seed_generator.state.assign([123, 0])  # another miner seed: the restore must replace it
    resumed.fit()
    assert int(resumed.step.numpy()) == int(full.step.numpy()) == 6
    np.testing.assert_array_equal(seed_state(miner_of(resumed)), seed_state(miner_of(full)))
    assert seed_state(miner_of(full))[1] == 6  # one draw per step
    for a, b in zip(full.method.weights, resumed.method.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
