"""Non-finite values: a NaN loss or gradient stops the run before its update (or is skipped and
counted with --nonfinite=skip), infer.py / evaluate.py refuse NaN embeddings, and the console's
epoch line is the epoch mean.

NaN is injected at chosen global steps by wrapping the method's ``compute_losses``."""
import glob
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from recipes import run_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_trainer import mirrored, small_cfg, weights

from dmltf import data
from dmltf.training.experiment import build_trainer, run
from dmltf.training.trainer import NonFiniteError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _at(trainer, steps):
    """True in the step whose 1-based global number is in ``steps`` (``trainer.step`` counts the steps before it)."""
    return tf.reduce_any(tf.equal(trainer.step + 1, tf.constant(steps, tf.int64)))


def poison_loss(trainer, steps):
    """The total loss is NaN at ``steps`` (its gradients stay finite: zero)."""
    original = trainer.method.compute_losses

    def compute_losses(batch, training=True):
        losses = dict(original(batch, training=training))
        losses["loss"] = tf.where(_at(trainer, steps), tf.constant(np.nan, losses["loss"].dtype), losses["loss"])
        return losses

    trainer.method.compute_losses = compute_losses


def poison_gradient(trainer, variable, steps, value=np.nan, replica=None):
    """``variable``'s gradient is ``value`` at ``steps`` (on replica ``replica`` only, if given);
    the loss stays finite."""
    original = trainer.method.compute_losses

    def compute_losses(batch, training=True):
        losses = dict(original(batch, training=training))
        bad = _at(trainer, steps)
        if replica is not None:
            bad = tf.logical_and(bad, tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, replica))

        @tf.custom_gradient
        def zero_with_poisoned_gradient(x):
            return tf.zeros([], losses["loss"].dtype), lambda dy: tf.where(bad, value, 0.0) * tf.ones_like(x)

        losses["loss"] = losses["loss"] + zero_with_poisoned_gradient(tf.convert_to_tensor(variable))
        return losses

    trainer.method.compute_losses = compute_losses


def checkpoint_numbers(logdir):
    return sorted(int(re.search(r"ckpt-(\d+)", p).group(1)) for p in glob.glob(os.path.join(logdir, "ckpt-*.index")))


def assert_finite_checkpoints(folder):
    for path in glob.glob(os.path.join(folder, "ckpt-*.index")):
        reader = tf.train.load_checkpoint(path[:-len(".index")])
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.isfinite(reader.get_tensor(name)).all(), (path, name)


def optimizer_state(trainer):
    return [v.numpy().copy() for g in trainer.groups for v in g.optimizer.variables]


def test_nan_loss_stops_before_its_update_and_keeps_the_finite_checkpoints(tmp_path):
    cfg = dict(epochs=4, optimizer="adamw", lr=1e-3, weight_decay=1e-4)
    trainer = build_trainer(small_cfg(tmp_path / "nan", **cfg))
    poison_loss(trainer, [8])  # epoch 3's second step (3 steps an epoch)
    with pytest.raises(NonFiniteError, match=r"^non-finite loss 'loss' at epoch 3, global step 8: the step was not "
                                             r"applied"):
        trainer.fit()
    # Epochs 1 and 2's checkpoints are kept (the manager keeps 2), nothing after them, all finite.
    assert checkpoint_numbers(tmp_path / "nan" / "checkpoints") == [1, 2]
    assert_finite_checkpoints(tmp_path / "nan" / "checkpoints")
    # The weights and optimizer state are those after step 7.
    reference = build_trainer(small_cfg(tmp_path / "ref", max_steps=7, **cfg))
    reference.fit()
    for a, b in zip(weights(trainer), weights(reference)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer_state(trainer), optimizer_state(reference)):
        np.testing.assert_array_equal(a, b)


def test_a_nan_gradient_on_one_replica_stops_every_replica(tmp_path):
    trainer = build_trainer(small_cfg(tmp_path / "nan", epochs=2), strategy=mirrored())
    group = trainer.groups[0]
    poison_gradient(trainer, group.group.variables[0], [5], replica=1)
    with pytest.raises(NonFiniteError, match=rf"^non-finite gradient of group '{group.name}' at epoch 2, "
                                             rf"global step 5"):
        trainer.fit()
    reference = build_trainer(small_cfg(tmp_path / "ref", epochs=2, max_steps=4), strategy=mirrored())
    reference.fit()
    for a, b in zip(weights(trainer), weights(reference)):
        np.testing.assert_array_equal(a, b)
    for v in trainer.method.trainable_variables:  # no replica applied the step
        first, second = (r.numpy() for r in v.value.values)
        np.testing.assert_array_equal(first, second)


def test_skip_mode_skips_exactly_the_nonfinite_steps_and_counts_them(tmp_path, capsys):
    trainer = build_trainer(small_cfg(tmp_path, epochs=2, nonfinite="skip", progress="epoch"))
    poison_loss(trainer, [2])
    poison_gradient(trainer, trainer.groups[-1].group.variables[0], [6])
    trainer.fit()
    assert int(trainer.step.numpy()) == 6
    for g in trainer.groups:  # an optimizer counts the steps it applied
        assert int(g.optimizer.iterations.numpy()) == 4, g.name
    assert all(np.isfinite(w).all() for w in weights(trainer))
    assert trainer.history[-1]["skipped_steps"] == 1 and np.isfinite(trainer.history[-1]["loss"])
    acc = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    acc.Reload()
    assert [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors("train/skipped_steps")] == [
        (1, 1.0), (2, 1.0)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("3/3")]
    assert len(lines) == 2 and all("skipped_steps: 1.0000" in line for line in lines), lines


def test_float16_overflow_is_still_the_loss_scalers_to_skip(tmp_path):
    """Under float16 loss scaling an inf gradient is an overflow, not an error: the
    LossScaleOptimizer skips the step and lowers its scale (kept working; passes before the fix too)."""
    try:
        trainer = build_trainer(small_cfg(tmp_path, precision="mixed_float16", optimizer="adamw", lr=1e-3))
        group = trainer.groups[0]
        poison_gradient(trainer, group.group.variables[0], [2], value=np.inf)
        trainer.fit()  # no NonFiniteError
        assert float(group.optimizer.dynamic_scale.numpy()) < group.optimizer.initial_scale  # it skipped
        assert int(trainer.step.numpy()) == 3 and all(np.isfinite(w).all() for w in weights(trainer))
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")


def script(name, *args):
    return run_script(os.path.join(ROOT, "train", name), *args, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def error_lines(out):
    return [line for line in out.stderr.splitlines() if line.startswith("error:")]


def test_cli_stops_a_diverging_run_with_one_error_line(tmp_path):
    """The issue's reproduction: --lr=1e4 diverges in epoch 2."""
    logdir = tmp_path / "run"
    out = script("main.py", f"--flagfile={os.path.join(ROOT, 'train', 'configs', 'demo.cfg')}", "--export=false",
                 "--baselines=false", "--tb_projector_points=0", "--tb_neighbours=0", "--lr=1e4", "--epochs=4",
                 "--eval_every=0", "--progress=none", f"--logdir={logdir}")
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = error_lines(out)
    assert len(errors) == 1 and re.match(r"error: non-finite .* at epoch \d+, global step \d+", errors[0]), errors
    assert checkpoint_numbers(logdir / "checkpoints")
    assert_finite_checkpoints(logdir / "checkpoints")


def test_infer_and_evaluate_refuse_nonfinite_embeddings(tmp_path):
    logdir = tmp_path / "run"
    trainer, _ = run(small_cfg(logdir, export=True))
    # Fabricate a run (its last checkpoint) and an export whose embeddings are all NaN.
    head = trainer.method.embedding_model.get_layer("head").trainable_variables[0]
    head.assign(np.full(head.shape, np.nan, np.float32))
    trainer.manager.save(checkpoint_number=99)
    model = trainer.export() + "/embedding_model.keras"
    rows = trainer.eval_split.num_examples

    out_npy = tmp_path / "emb.npy"
    out = script("infer.py", f"--run={logdir}", "--which=last", f"--output={out_npy}")
    assert out.returncode == 1 and error_lines(out) == [
        f"error: run {logdir} (checkpoint {logdir / 'checkpoints' / 'ckpt-99'}) gives non-finite (NaN or inf) "
        f"embeddings for {rows} of {rows} images: its weights are not usable"], out.stderr[-3000:]
    assert not glob.glob(str(tmp_path / "emb*"))

    out = script("evaluate.py", f"--run={logdir}", "--which=last", f"--output_json={tmp_path / 'm.json'}")
    assert out.returncode == 1 and len(error_lines(out)) == 1, out.stderr[-3000:]
    assert f"run {logdir} " in error_lines(out)[0] and f"for {rows} of {rows} images" in error_lines(out)[0]
    assert not glob.glob(str(tmp_path / "m.json*"))

    image = trainer.eval_split.load().images[0]
    Image.fromarray(np.repeat(image, 3, axis=-1)).save(tmp_path / "query.png")
    out = script("infer.py", f"--model={model}", f"--images={tmp_path / '*.png'}", f"--output={tmp_path / 'q.h5'}")
    assert out.returncode == 1 and error_lines(out) == [
        f"error: model {model} gives non-finite (NaN or inf) embeddings for 1 of 1 images: its weights are not "
        f"usable"], out.stderr[-3000:]
    assert not glob.glob(str(tmp_path / "q.h5*"))


def test_console_epoch_line_shows_the_epoch_mean(tmp_path, capsys):
    # lr 0: every step sees the same weights, so each step's loss can be recomputed afterwards.
    cfg = small_cfg(tmp_path, lr=0.0, max_steps_per_epoch=4, progress="epoch")
    trainer = build_trainer(cfg)
    trainer.fit()
    batches = data.train_dataset(trainer.train_split, trainer.sampler, seed=cfg.seed, epoch=0,
                                 augmentation=cfg.augmentation, preprocessing=trainer.preprocessing).take(4)
    step_losses = [float(trainer.method.compute_losses(b, training=True)["loss"]) for b in batches]
    assert abs(step_losses[-1] - np.mean(step_losses)) > 1e-3  # the last step's value would be told apart
    line = [line for line in capsys.readouterr().out.splitlines() if line.startswith("4/4")][-1]
    assert float(re.search(r"loss: ([0-9.]+)", line).group(1)) == pytest.approx(np.mean(step_losses), abs=1e-4)
    assert trainer.history[-1]["loss"] == pytest.approx(np.mean(step_losses), rel=1e-5)
