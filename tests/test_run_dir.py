"""A --logdir holds one run: a new run refuses a used one (or moves it aside with --overwrite),
``--resume`` keeps the run's record (history, best score, settings), and a damaged checkpoint is
named in one line, with a fallback to the one before on request.

Small CNN on the bundled digits, 3 steps an epoch (``small_cfg``).
"""
import glob
import json
import os
import subprocess
import sys

import pytest

import config
from dmltf.training import inference
from dmltf.training.experiment import build_trainer
from test_trainer import small_cfg

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train", "main.py")


def snapshot(logdir):
    """{file: (size, mtime)} of everything under ``logdir``."""
    found = {}
    for path in glob.glob(os.path.join(str(logdir), "**"), recursive=True):
        if os.path.isfile(path):
            stat = os.stat(path)
            found[os.path.relpath(path, logdir)] = (stat.st_size, stat.st_mtime_ns)
    return found


def read_json(path):
    with open(path) as f:
        return json.load(f)


def scripted_scores(trainer, scores):
    """Makes ``trainer``'s evaluations return the next of ``scores`` as map@r."""
    scores = iter(scores)
    trainer.evaluate = lambda at, final=False: {"recall@1": 0.5, "map@r": next(scores)}


# -- one run per --logdir -------------------------------------------------------------------
def test_building_a_trainer_writes_nothing(tmp_path):
    build_trainer(small_cfg(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_new_run_in_a_logdir_holding_one_is_refused_before_anything_is_written(tmp_path):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir, eval_every=1)).fit()
    before = snapshot(logdir)
    with pytest.raises(ValueError, match="already holds a run: continue it with --resume") as info:
        build_trainer(small_cfg(logdir, epochs=2, lr=5e-4))
    assert "\n" not in str(info.value)
    assert snapshot(logdir) == before


def test_main_refuses_a_new_run_in_a_used_logdir_in_one_line(tmp_path):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir)).fit()
    before = snapshot(logdir)
    out = subprocess.run([sys.executable, MAIN, "--dataset=digits", "--embedding_dim=16", "--epochs=1",
                          "--max_steps_per_epoch=1", "--eval_every=0", "--export=false", "--progress=none",
                          f"--logdir={logdir}"],
                         capture_output=True, text=True, timeout=180, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {logdir} already holds a run")
    assert snapshot(logdir) == before


def test_overwrite_moves_the_old_run_aside(tmp_path, capsys):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir, eval_every=1)).fit()
    old = snapshot(logdir)
    capsys.readouterr()
    new = build_trainer(small_cfg(logdir, lr=5e-4, overwrite=True))
    [aside] = glob.glob(f"{logdir}.old-*")
    assert capsys.readouterr().out.splitlines() == [f"--overwrite: moved the run in {logdir} aside to {aside}"]
    assert snapshot(aside) == old and not logdir.exists()
    new.fit()
    assert read_json(logdir / "config.json")["lr"] == 5e-4 and read_json(f"{aside}/config.json")["lr"] == 0.05
    with pytest.raises(ValueError, match="--resume continues the run in --logdir and --overwrite starts a new one"):
        build_trainer(small_cfg(logdir, overwrite=True, resume=True))


def test_a_run_killed_before_its_first_checkpoint_leaves_no_config_contradicting_checkpoints(
        tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir)).fit()
    killed = build_trainer(small_cfg(logdir, embedding_dim=32, overwrite=True))

    def killed_in_its_first_epoch(epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(killed, "train_epoch", killed_in_its_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert read_json(logdir / "config.json")["embedding_dim"] == 32
    defaults = vars(config.make())
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):  # not a shape mismatch
        inference.from_run(str(logdir), which="last", defaults=defaults)
    [aside] = glob.glob(f"{logdir}.old-*")
    inference.from_run(aside, which="last", defaults=defaults)  # the old run, whole
    capsys.readouterr()
    resumed = build_trainer(small_cfg(logdir, embedding_dim=32, resume=True))
    started = f"--resume: no checkpoint in {logdir / 'checkpoints'} yet: the run starts at epoch 1"
    assert started in capsys.readouterr().out
    resumed.fit()
    assert int(resumed.step.numpy()) == 3


def test_config_json_is_replaced_atomically(tmp_path, monkeypatch):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir)).fit()
    before = (logdir / "config.json").read_text()
    resumed = build_trainer(small_cfg(logdir, epochs=2, resume=True))

    def killed_while_writing(value, f, **options):
        f.write('{"partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        resumed.fit()
    assert (logdir / "config.json").read_text() == before
    assert not glob.glob(f"{logdir}/*.partial-*")


# -- --resume keeps the run's record ----------------------------------------------------------
def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no run to continue .no config.json.; start one without --resume"):
        build_trainer(small_cfg(tmp_path / "missing", resume=True))
    assert not (tmp_path / "missing").exists()


def test_resume_appends_to_the_history(tmp_path):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir, epochs=1, eval_every=1)).fit()
    build_trainer(small_cfg(logdir, epochs=2, eval_every=1, resume=True)).fit()
    history = read_json(logdir / "history.json")
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 3), (2, 6)]
    build_trainer(small_cfg(logdir, epochs=2, eval_every=1, resume=True)).fit()  # a finished run
    assert read_json(logdir / "history.json") == history


def test_resume_drops_the_evaluations_of_the_lost_part_of_the_run(tmp_path):
    logdir, run = tmp_path / "run", dict(epochs=2, eval_every=1, eval_every_steps=2)
    killed = build_trainer(small_cfg(logdir, **run))
    save = killed.manager.save

    def killed_before_the_second_checkpoint(checkpoint_number):
        if checkpoint_number == 2:
            raise KeyboardInterrupt
        return save(checkpoint_number=checkpoint_number)

    killed.manager.save = killed_before_the_second_checkpoint
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert [h["step"] for h in read_json(logdir / "history.json")] == [2, 3, 4]
    build_trainer(small_cfg(logdir, **run, resume=True)).fit()
    assert [(h["epoch"], h["step"]) for h in read_json(logdir / "history.json")] == [(1, 2), (1, 3), (2, 4), (2, 6)]


def test_resume_keeps_the_best_score_so_best_is_only_replaced_by_a_better_one(tmp_path):
    logdir = tmp_path / "run"
    best = lambda: os.path.basename(glob.glob(str(logdir / "best" / "ckpt-*.index"))[0])  # noqa: E731
    first = build_trainer(small_cfg(logdir, epochs=1, eval_every=1))
    scripted_scores(first, [0.5])
    first.fit()
    assert best() == "ckpt-1.index"
    worse = build_trainer(small_cfg(logdir, epochs=2, eval_every=1, resume=True))
    scripted_scores(worse, [0.3])
    assert worse.restore() == 1 and worse.best_score.numpy() == 0.5
    worse.fit()
    assert best() == "ckpt-1.index"
    better = build_trainer(small_cfg(logdir, epochs=3, eval_every=1, resume=True))
    scripted_scores(better, [0.6])
    better.fit()
    assert best() == "ckpt-3.index" and better.best_score.numpy() == 0.6


def test_resume_refuses_settings_that_change_the_model_and_records_the_safe_ones(tmp_path, capsys):
    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir)).fit()
    with pytest.raises(ValueError, match=r"other settings that change the model, its state or its scores: "
                                         r"--embedding_dim 16 -> 32, --loss 'proxy_anchor' -> 'triplet', "
                                         r"--seed 0 -> 1 \(") as info:
        build_trainer(small_cfg(logdir, epochs=2, lr=0.01, embedding_dim=32, loss="triplet", seed=1, resume=True))
    assert "\n" not in str(info.value) and "--lr" not in str(info.value)
    capsys.readouterr()
    resumed = build_trainer(small_cfg(logdir, epochs=2, lr=0.01, resume=True))
    assert (f"warning: --resume continues {logdir} with changed settings: --epochs 1 -> 2, --lr 0.05 -> 0.01 "
            f"(recorded in its config.json)") in capsys.readouterr().out
    resumed.fit()
    build_trainer(small_cfg(logdir, epochs=3, lr=0.01, resume=True)).fit()
    stored = read_json(logdir / "config.json")
    assert stored["lr"] == 0.01 and stored["epochs"] == 3
    assert stored["resumed"] == [{"epoch": 1, "changed": {"epochs": [1, 2], "lr": [0.05, 0.01]}},
                                 {"epoch": 2, "changed": {"epochs": [2, 3]}}]


# -- damaged checkpoints ------------------------------------------------------------------
def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_a_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage,suffix,what", [
    (truncate, ".data-00000-of-00001", "Read less bytes than requested"),
    (flip_a_byte, ".data-00000-of-00001", "Checksum does not match"),
    (truncate, ".index", ""),
    (os.remove, ".data-00000-of-00001", "missing"),
])
def test_a_damaged_checkpoint_is_named_in_one_line_and_fallback_continues_from_the_one_before(
        tmp_path, capsys, damage, suffix, what):
    from dmltf.training.trainer import checkpoint_damage

    logdir = tmp_path / "run"
    build_trainer(small_cfg(logdir, epochs=2)).fit()
    last, previous = str(logdir / "checkpoints" / "ckpt-2"), str(logdir / "checkpoints" / "ckpt-1")
    damage(last + suffix)
    named = last + (".data-*" if damage is os.remove else suffix)
    with pytest.raises(ValueError) as info:
        build_trainer(small_cfg(logdir, epochs=3, resume=True))
    message = str(info.value)
    assert message.startswith(f"damaged checkpoint: {named}: ") and what in message and "\n" not in message
    assert message.endswith(f"(--resume_fallback continues from {previous})")
    capsys.readouterr()
    resumed = build_trainer(small_cfg(logdir, epochs=3, resume=True, resume_fallback=True))
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--resume_fallback")]
    assert line.startswith(f"--resume_fallback: damaged checkpoint {named}: ") and what in line
    assert line.endswith(f"; continuing from {previous}")
    assert resumed.restore() == 1
    resumed.fit()
    assert int(resumed.step.numpy()) == 9 and checkpoint_damage(last) is None  # epoch 2 trained and saved again
