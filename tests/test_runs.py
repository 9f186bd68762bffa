"""Runs: starting from another run (--init_from), counting iterations (--max_steps, the piecewise
schedule, --eval_every_steps), and ``compile``/``fit`` training every optimizer group at its rate.

Small CNN on the bundled digits, 3 steps an epoch (``small_cfg``).
"""
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from dmltf import data
from dmltf.training.experiment import build_trainer
from dmltf.training.optim import schedule_factor
from test_trainer import small_cfg, weights


def embedding_weights(model):
    return [w.numpy().copy() for w in model.weights]


def checkpointed_embedding(cfg, path, logdir):
    """The embedding weights stored in checkpoint ``path``, restored by TensorFlow into a trainer
    built for ``cfg`` (the reference the loader is checked against)."""
    trainer = build_trainer(config.make(**{**vars(cfg), "logdir": str(logdir), "resume": False}))
    tf.train.Checkpoint(method=trainer.method).restore(path).expect_partial()
    return embedding_weights(trainer.method.embedding_model)


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def scalars(logdir, tag):
    """[(step, value)] of a TensorBoard scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def recording_rates(trainer, group="backbone"):
    """The learning rate of ``group`` at every step ``trainer`` takes from now on."""
    rates, make_step = [], trainer._step_fn
    optimizer = {g.name: g for g in trainer.groups}[group]

    def step_fn(active, clip):
        step = make_step(active, clip)

        def recorded(batch):
            rates.append(optimizer.learning_rate)
            return step(batch)

        return recorded

    trainer._step_fn = step_fn
    return rates


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A finished stage-1 (classification) run: best/ after epoch 1, checkpoints/ and export/ after
    epoch 2 (trained without evaluation, so best/ stays at epoch 1)."""
    logdir = tmp_path_factory.mktemp("stage1")
    build_trainer(small_cfg(logdir, loss="normalized_softmax", epochs=1)).fit()
    trainer = build_trainer(small_cfg(logdir, loss="normalized_softmax", epochs=2, resume=True))
    trainer.eval_split = None
    trainer.fit()
    trainer.export()
    return logdir, trainer


def stage2_cfg(tmp_path, **overrides):
    """Stage 2: a pair loss, fine-tuned from stage 1."""
    return small_cfg(tmp_path, loss="triplet", miner="semi_hard", optimizer="adamw", lr=1e-3, **overrides)


def test_init_from_a_run_loads_its_best_then_last_checkpoint_with_fresh_losses_and_optimizers(
        tmp_path, stage1, capsys):
    logdir, source = stage1
    best = tf.train.latest_checkpoint(os.path.join(logdir, "best"))
    best_weights = checkpointed_embedding(source.cfg, best, tmp_path / "best_reference")
    last_weights = embedding_weights(source.method.embedding_model)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(best_weights, last_weights))
    fresh = build_trainer(stage2_cfg(tmp_path / "fresh"))
    trainer = build_trainer(stage2_cfg(tmp_path / "stage2", init_from=str(logdir)))
    assert f"embedding model weights from {best}" in capsys.readouterr().out
    assert_same(embedding_weights(trainer.method.embedding_model), best_weights)
    # Losses and optimizers start anew: a triplet loss, no optimizer step taken, fresh slots.
    assert type(trainer.method.loss_fn).__name__ != type(source.method.loss_fn).__name__
    assert int(trainer.step.numpy()) == 0
    for g, f in zip(trainer.groups, fresh.groups):
        assert int(g.optimizer.iterations.numpy()) == 0
        assert_same([v.numpy() for v in g.optimizer.variables], [v.numpy() for v in f.optimizer.variables])
    trainer.fit()
    assert int(trainer.step.numpy()) == 3

    # Without best/, the last checkpoint.
    run = tmp_path / "without_best"
    shutil.copytree(logdir, run)
    shutil.rmtree(run / "best")
    trainer = build_trainer(stage2_cfg(tmp_path / "from_last", init_from=str(run)))
    assert f"embedding model weights from {run / 'checkpoints' / 'ckpt-2'}" in capsys.readouterr().out
    assert_same(embedding_weights(trainer.method.embedding_model), last_weights)


@pytest.mark.parametrize("where", ["export", "export/embedding_model.keras"])
def test_init_from_an_export(tmp_path, stage1, where):
    logdir, source = stage1
    trainer = build_trainer(stage2_cfg(tmp_path, init_from=str(logdir / where)))
    exported = keras.saving.load_model(str(logdir / "export" / "embedding_model.keras"))
    assert_same(embedding_weights(trainer.method.embedding_model), embedding_weights(exported))
    assert_same(embedding_weights(trainer.method.embedding_model), embedding_weights(source.method.embedding_model))


@pytest.mark.parametrize("where", ["", "export"])
def test_init_from_another_architecture_is_a_one_line_error_before_training(tmp_path, stage1, where):
    logdir, _ = stage1
    with pytest.raises(ValueError, match=r"another architecture: head/dense/kernel has shape \(\d+, 16\) there, "
                                         r"\(\d+, 32\) here") as info:
        build_trainer(stage2_cfg(tmp_path / "wide", embedding_dim=32, init_from=str(logdir / where)))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="another architecture: .*(no value for head/bn/gamma and 3 more|"
                                         "has 17 weights, this run's 21)") as info:
        build_trainer(stage2_cfg(tmp_path / "bn", embedding_bn=True, init_from=str(logdir / where)))
    assert "\n" not in str(info.value)


def test_init_from_a_path_without_a_run_or_export(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing.keras"):
        with pytest.raises(FileNotFoundError, match="not a run directory .* or an exported embedding_model.keras"):
            build_trainer(stage2_cfg(tmp_path / "run", init_from=str(path)))


def test_init_from_is_ignored_when_resume_continues_a_run(tmp_path, stage1, capsys):
    logdir, _ = stage1
    first = build_trainer(stage2_cfg(tmp_path / "run", init_from=str(logdir)))
    first.fit()
    trained = embedding_weights(first.method.embedding_model)
    capsys.readouterr()
    resumed = build_trainer(stage2_cfg(tmp_path / "run", init_from=str(logdir), resume=True))
    assert "--init_from ignored: --resume continues" in capsys.readouterr().out
    untouched = build_trainer(stage2_cfg(tmp_path / "fresh")).method.embedding_model
    assert_same(embedding_weights(resumed.method.embedding_model), embedding_weights(untouched))
    assert resumed.restore() == 1
    assert_same(embedding_weights(resumed.method.embedding_model), trained)


def test_max_steps_spans_epochs_and_resume_is_exact(tmp_path):
    run = dict(epochs=10, max_steps=5, optimizer="adamw", lr=1e-3, weight_decay=1e-4)
    full = build_trainer(small_cfg(tmp_path / "full", **run))
    full.fit()
    assert (int(full.step.numpy()), int(full.epoch.numpy())) == (5, 2)  # 3 + 2 steps
    assert [(h["epoch"], h["step"]) for h in full.history] == [(2, 5)]  # the last epoch's evaluation
    assert len(tf.io.gfile.glob(str(tmp_path / "full" / "checkpoints" / "ckpt-*.index"))) == 2

    stopped = build_trainer(small_cfg(tmp_path / "resumed", **{**run, "epochs": 1}))
    stopped.fit()
    assert int(stopped.step.numpy()) == 3
    del stopped
    resumed = build_trainer(small_cfg(tmp_path / "resumed", **run, resume=True))
    resumed.fit()
    assert (int(resumed.step.numpy()), int(resumed.epoch.numpy())) == (5, 2)
    for a, b in zip(weights(full), weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for ga, gb in zip(full.groups, resumed.groups):
        for va, vb in zip(ga.optimizer.variables, gb.optimizer.variables):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), atol=1e-6)
    # A finished run resumed again trains no further.
    again = build_trainer(small_cfg(tmp_path / "resumed", **run, resume=True))
    again.fit()
    assert int(again.step.numpy()) == 5


def test_piecewise_schedule_counts_iterations():
    cfg = config.make(schedule="piecewise", lr_boundaries=["2", "4"], lr_gamma=0.1)
    assert [round(schedule_factor(cfg, 0, step), 6) for step in range(6)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    assert schedule_factor(config.make(schedule="piecewise", lr_boundaries=["15000", "25000"], lr_gamma=0.1), 0,
                           25000) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="needs --lr_boundaries"):
        schedule_factor(config.make(schedule="piecewise"), 0, 0)


def test_piecewise_rates_per_iteration_also_after_a_resume(tmp_path):
    run = dict(schedule="piecewise", lr_boundaries=["2", "4"], lr_gamma=0.1, lr=0.05)
    trainer = build_trainer(small_cfg(tmp_path / "full", epochs=2, **run))
    rates = recording_rates(trainer)
    trainer.fit()
    np.testing.assert_allclose(rates, [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005], rtol=1e-6)
    rates = {g.name: g.learning_rate for g in trainer.groups}
    assert rates["backbone"] == pytest.approx(0.0005) and rates["loss"] == pytest.approx(0.05)  # 100x proxies
    logged = scalars(tmp_path / "full", "learning_rate/backbone")  # each epoch's last rate
    assert [s for s, _ in logged] == [1, 2]
    np.testing.assert_allclose([v for _, v in logged], [0.005, 0.0005], rtol=1e-6)

    build_trainer(small_cfg(tmp_path / "resumed", epochs=1, **run)).fit()
    resumed = build_trainer(small_cfg(tmp_path / "resumed", epochs=2, resume=True, **run))
    rates = recording_rates(resumed)
    resumed.fit()
    np.testing.assert_allclose(rates, [0.005, 0.0005, 0.0005], rtol=1e-6)


def test_eval_every_steps_evaluates_at_those_iterations(tmp_path):
    trainer = build_trainer(small_cfg(tmp_path, epochs=2, eval_every=1, eval_every_steps=2))
    trainer.fit()
    # Steps 2 and 4 inside epochs, 3 and 6 at the epochs' ends (6 once, though due twice).
    assert [(h["epoch"], h["step"]) for h in trainer.history] == [(1, 2), (1, 3), (2, 4), (2, 6)]
    assert all("map@r" in h and "loss" in h for h in trainer.history)
    assert [s for s, _ in scalars(tmp_path, "eval/map@r")] == [2, 3, 4, 6]
    assert tf.train.latest_checkpoint(str(tmp_path / "best"))


@pytest.mark.parametrize("overrides", [
    dict(loss="proxy_anchor"),  # proxies at 100x
    # Groups minimising three loss keys (encoder, decoder, classifier), without weight decay.
    dict(method="dvml", dvml_mode="reference", loss="triplet", miner="semi_hard", batch_sampler="random",
         embedding_dim=8, dvml_decoder_units=16),
])
def test_fit_trains_each_group_at_its_rate_and_loss_like_the_custom_loop(tmp_path, overrides):
    overrides = dict(overrides, freeze_bn=True, max_steps_per_epoch=1, lr=0.05)
    loop = build_trainer(small_cfg(tmp_path / "loop", **overrides))
    keras_fit = build_trainer(small_cfg(tmp_path / "fit", **overrides))
    assert_same(weights(loop), weights(keras_fit))
    if overrides["loss"] == "proxy_anchor":
        assert {g.name: g.base_lr for g in loop.groups}["loss"] == pytest.approx(5.0)
    else:
        assert len({g.loss_key for g in loop.groups}) == 3
    cfg = loop.cfg
    batch = next(iter(data.train_dataset(loop.train_split, loop.sampler, seed=cfg.seed, epoch=0,
                                         augmentation=cfg.augmentation, preprocessing=loop.preprocessing)))
    before = weights(loop)
    loop.train_epoch(0)

    method = keras_fit.method
    method.compile(optimizer=keras.optimizers.SGD(cfg.lr))
    method.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    for a, b, start in zip(weights(loop), weights(keras_fit), before):
        assert np.abs(a - start).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert int(method.optimizer.iterations.numpy()) == 1
