"""A user's first hour (issue 18): per-epoch speed in the log and history.json, --threads,
--checkpoint_every, --save_embeddings, --early_stop_patience and --loss_lr_multiplier.

Small CNN on the bundled digits, 3 steps an epoch (``small_cfg``); two tests start
train/main.py and train/infer.py as programs (one run shared). Budget: ~40 s.
"""
import glob
import json
import os
import re

import h5py
import numpy as np
import pytest
from recipes import run_script

import config
from dmltf.training import builders
from dmltf.training.experiment import build_trainer
from dmltf.training.trainer import configure_threads
from test_trainer import small_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def checkpoint_numbers(folder):
    return sorted(int(re.search(r"ckpt-(\d+)\.index$", p).group(1)) for p in glob.glob(os.path.join(folder, "*.index")))


# -- per-epoch speed -------------------------------------------------------------------------
def test_history_and_log_carry_each_epochs_losses_speed_and_time(tmp_path, capsys):
    trainer = build_trainer(small_cfg(tmp_path, epochs=2, eval_every=0, progress="epoch"))
    trainer.fit()
    records = read_json(tmp_path / "history.json")
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 3), (2, 6)]
    assert records[0]["evaluated"] is False and "map@r" not in records[0]  # epoch 1: trained, not evaluated
    assert "evaluated" not in records[1] and "map@r" in records[1]
    for r in records:
        assert np.isfinite(r["loss"]) and r["epoch_seconds"] > 0
        assert r["images_per_s"] == pytest.approx(3 * trainer.global_batch / r["epoch_seconds"], rel=1e-9)
    assert records[1]["elapsed_seconds"] == pytest.approx(records[0]["epoch_seconds"] + records[1]["epoch_seconds"])
    assert trainer.training_seconds == pytest.approx(records[1]["elapsed_seconds"])
    # The evaluations alone, as before, in trainer.history.
    assert [(h["epoch"], "images_per_s" in h) for h in trainer.history] == [(2, False)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 2/2:")]
    assert len(lines) == 1 and f"loss {records[1]['loss']:.4f}" in lines[0]
    assert f"{records[1]['images_per_s']:,.0f} images/s" in lines[0]
    assert f"(training {records[1]['elapsed_seconds']:.1f} s)" in lines[0]


# -- checkpoint thinning ---------------------------------------------------------------------
def test_checkpoint_every_thins_checkpoints_keeps_last_and_best_and_resumes_exactly(tmp_path):
    run = dict(epochs=3, checkpoint_every=2, eval_every=1, optimizer="adamw", lr=1e-3, weight_decay=1e-4)
    full = build_trainer(small_cfg(tmp_path / "full", **run))
    saved, save = [], full.manager.save
    full.manager.save = lambda checkpoint_number: (saved.append(checkpoint_number), save(checkpoint_number))[1]
    full.fit()
    assert saved == [2, 3]  # epoch 2, and the last
    best = checkpoint_numbers(tmp_path / "full" / "best")
    assert len(best) == 1 and best[0] == 1 + int(np.argmax([h["map@r"] for h in full.history]))

    killed = build_trainer(small_cfg(tmp_path / "killed", **run))
    killed.eval_split = None  # evaluation changes no state; without it the test is faster
    train_epoch = killed.train_epoch

    def dies_in_epoch_3(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return train_epoch(epoch)

    killed.train_epoch = dies_in_epoch_3
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert checkpoint_numbers(tmp_path / "killed" / "checkpoints") == [2]
    resumed = build_trainer(small_cfg(tmp_path / "killed", **run, resume=True))
    resumed.eval_split = None
    assert resumed.restore() == 2
    resumed.fit()
    for a, b in zip(full.method.variables, resumed.method.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert [r["epoch"] for r in read_json(tmp_path / "killed" / "history.json")] == [1, 2, 3]


def test_checkpoint_every_below_one_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"^--checkpoint_every must be >= 1, got 0$"):
        build_trainer(small_cfg(tmp_path / "run", checkpoint_every=0))
    assert not os.path.exists(tmp_path / "run")


# -- early stop ------------------------------------------------------------------------------
def scripted(trainer, scores):
    """The trainer's evaluations give ``scores[epoch]`` as map@r (the metric a run would measure)."""
    trainer.evaluate = lambda at, final=False: {"recall@1": 0.0, "map@r": scores[at]}
    return trainer


SCORES = {1: 0.3, 2: 0.5, 3: 0.4, 4: 0.45, 5: 0.6, 6: 0.7}


def test_early_stop_stops_after_patience_evaluations_and_resume_keeps_the_count(tmp_path, capsys):
    run = dict(eval_every=1, early_stop_patience=2, max_steps_per_epoch=1)
    stopped = scripted(build_trainer(small_cfg(tmp_path / "stopped", epochs=6, **run)), SCORES)
    stopped.fit()  # best 0.5 at epoch 2; 0.4 and 0.45 do not improve on it
    assert int(stopped.epoch.numpy()) == 4 and int(stopped.step.numpy()) == 4
    records = read_json(tmp_path / "stopped" / "history.json")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["stopped_early"] is True and not any("stopped_early" in r for r in records[:-1])
    assert checkpoint_numbers(tmp_path / "stopped" / "checkpoints")[-1] == 4
    out = capsys.readouterr().out
    assert out.count("early stop after epoch 4: map@r has not improved on 0.5000 for 2 evaluations") == 1

    # Killed after epoch 3 (one evaluation without improvement): the resumed run stops after epoch 4,
    # where a fresh count would go on to epoch 5's 0.6.
    scripted(build_trainer(small_cfg(tmp_path / "resumed", epochs=3, **run)), SCORES).fit()
    resumed = scripted(build_trainer(small_cfg(tmp_path / "resumed", epochs=6, resume=True, **run)), SCORES)
    resumed.fit()
    assert int(resumed.epoch.numpy()) == 4
    assert read_json(tmp_path / "resumed" / "history.json")[-1]["stopped_early"] is True
    # A stopped run stays stopped; without early stopping it would go on.
    again = scripted(build_trainer(small_cfg(tmp_path / "resumed", epochs=6, resume=True, **run)), SCORES)
    again.fit()
    assert int(again.epoch.numpy()) == 4 and "the run stopped early at epoch 4" in capsys.readouterr().out
    off = dict(run, early_stop_patience=0)
    scripted(build_trainer(small_cfg(tmp_path / "off", epochs=6, **off)), SCORES).fit()
    assert read_json(tmp_path / "off" / "history.json")[-1]["epoch"] == 6


# -- --loss_lr_multiplier ---------------------------------------------------------------------
def test_loss_lr_multiplier_empty_is_the_reference_and_zero_freezes(tmp_path):
    def build(value):
        return builders.build_loss(config.make(loss_lr_multiplier=value), "proxy_anchor", 10, 16)

    assert config.make().loss_lr_multiplier == ""
    assert build("").lr_multiplier == 100.0  # Proxy-Anchor's reference multiplier
    assert build("0").lr_multiplier == 0.0 and build(2.5).lr_multiplier == 2.5
    with pytest.raises(ValueError, match=r"^--loss_lr_multiplier='x': expected a number, or empty"):
        build("x")
    trainer = build_trainer(small_cfg(tmp_path, loss="proxy_anchor", loss_lr_multiplier="0"))
    proxies = trainer.method.loss_fn.proxies.numpy().copy()
    model = [v.numpy().copy() for v in trainer.method.embedding_model.trainable_variables]
    trainer.fit()
    np.testing.assert_array_equal(trainer.method.loss_fn.proxies.numpy(), proxies)  # frozen
    moved = [np.abs(v.numpy() - m).max() for v, m in zip(trainer.method.embedding_model.trainable_variables, model)]
    assert max(moved) > 0  # the model trained


# -- --threads and --save_embeddings, as programs ---------------------------------------------
def test_threads_cannot_change_once_tensorflow_runs():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # the runtime is initialised
    with pytest.raises(ValueError, match=r"^--threads=3: TensorFlow's runtime is already initialised"):
        configure_threads(3)
    with pytest.raises(ValueError, match=r"^--threads must be >= 0"):
        configure_threads(-1)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A train/main.py run with --threads=1 --save_embeddings: (logdir, its stdout)."""
    logdir = tmp_path_factory.mktemp("cli") / "run"
    out = run_script(os.path.join(REPO, "train", "main.py"), "--dataset=digits", "--embedding_dim=16", "--epochs=1",
                     "--max_steps_per_epoch=2", "--eval_every=0", "--export=false", "--progress=none",
                     "--tb_neighbours=0", "--tb_projector_points=0", "--eval_metrics=recall@1",
                     "--best_metric=recall@1", "--threads=1", "--save_embeddings", f"--logdir={logdir}", env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return logdir, out.stdout


def test_main_applies_threads_and_prints_the_training_time(cli_run):
    logdir, stdout = cli_run
    assert "threads: 1 intra-op, 1 inter-op" in stdout.splitlines()
    seconds = float(re.search(r"^training time: ([0-9.]+) s$", stdout, re.M).group(1))
    assert seconds == pytest.approx(read_json(logdir / "history.json")[-1]["elapsed_seconds"], abs=0.05)


def test_saved_embeddings_equal_infer_output(cli_run, tmp_path):
    logdir, stdout = cli_run
    saved = logdir / "embeddings.h5"
    assert f"embeddings of the final evaluation to {saved}" in stdout
    assert not glob.glob(str(logdir / "embeddings.h5.partial-*"))
    out = run_script(os.path.join(REPO, "train", "infer.py"), f"--run={logdir}", "--which=last",
                     f"--output={tmp_path / 'infer.h5'}", env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    with h5py.File(saved, "r") as a, h5py.File(tmp_path / "infer.h5", "r") as b:
        assert set(a) == set(b) == {"embeddings", "labels"}
        assert a["embeddings"].shape == (899, 16) and a["embeddings"].dtype == np.float32
        np.testing.assert_array_equal(a["labels"][:], b["labels"][:])
        np.testing.assert_array_equal(a["embeddings"][:], b["embeddings"][:])
        assert (a.attrs["epoch"], a.attrs["step"], a.attrs["split"]) == (1, 2, "test")


def test_resuming_a_run_stored_with_the_old_zero_multiplier_changes_nothing(tmp_path, capsys):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir, max_steps_per_epoch=1)).fit()
    stored = read_json(logdir / "config.json")
    stored["loss_lr_multiplier"] = 0.0  # what a run wrote before: 0 meant the reference multiplier
    with open(logdir / "config.json", "w") as f:
        json.dump(stored, f)
    build_trainer(small_cfg(logdir, max_steps_per_epoch=1, epochs=2, resume=True)).fit()
    assert "--loss_lr_multiplier" not in capsys.readouterr().out
    assert read_json(logdir / "config.json")["resumed"][-1]["changed"] == {"epochs": [1, 2]}


# -- memory: the pair-distance histograms (bench/memory.py) ------------------------------------
@pytest.mark.parametrize("values", [np.random.default_rng(0).gamma(2.0, size=20000), np.full(7, 0.5), np.zeros(0),
                                    np.array([0.0, 1.0, 1.0, 2.0])])
def test_histogram_buckets_are_tensorboards(values):
    from tensorboard.plugins.histogram.summary_v2 import _buckets

    from dmltf.training.summaries import histogram_buckets

    np.testing.assert_array_equal(histogram_buckets(values), _buckets(values, 30).numpy())
