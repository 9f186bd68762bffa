"""Expected failures fail early, in one line, leaving nothing behind (issue 12, items 6-8).

Training configurations are checked in-process through ``build_trainer`` (``train/main.py``
prints its ValueErrors as ``error: ...``, shown once by subprocess); the entry points run as
processes, all started at once (recipes.start_script: without the TensorFlow import each).
"""
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from recipes import start_script

import config
from dmltf.data import DatasetWriter, open_dataset
from dmltf.data.raw import folder
from dmltf.data.splits import DatasetError
from dmltf.data.writer import partial_name
from dmltf.training.experiment import build_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_cfg(logdir, **overrides):
    return config.make(**{"dataset": "digits", "embedding_dim": 8, "classes_per_batch": 10, "samples_per_class": 2,
                          "epochs": 1, "progress": "none", "tb_neighbours": 0, "tb_projector_points": 0,
                          "export": False, "logdir": str(logdir), **overrides})


def small_dataset(path):
    """A dmltf HDF5 file with a 'test' split of 20 8x8 grayscale images."""
    rng = np.random.default_rng(0)
    with DatasetWriter(path, class_names=["a", "b"]) as writer:
        writer.begin_split("test", num_examples=20, image_shape=(8, 8, 1))
        for i in range(20):
            writer.add(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), i % 2)
        writer.end_split()
    return path


def truncated_dataset(path):
    """A real dmltf HDF5 file cut to half its size, as an interrupted copy leaves it."""
    small_dataset(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


def error_line(result):
    """The one ``error:`` line a failed script printed last on stderr (no traceback)."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr[-2000:]
    return errors[0]


# -- training: every check before the run starts ----------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"eval_metrics": ["recall@1", "bogus"]}, "--eval_metrics: Unknown metric 'bogus'"),
    ({"eval_metrics": ["recall@1"], "best_metric": "nmi"}, "--best_metric=nmi is not among --eval_metrics (recall@1)"),
    ({"eval_metrics": ["recall@1", "fnmr@fmr=0.01"], "best_metric": "fnmr@fmr=0.01"},
     "--best_metric=fnmr@fmr=0.01 is better when lower"),
    ({"eval_average": "weighted"}, "--eval_average must be one of micro, macro, got 'weighted'"),
    ({"eval_kmeans": "kmeans++"}, "--eval_kmeans: Unknown kmeans_backend 'kmeans++'"),
    ({"epochs": 0}, "--epochs must be >= 1, got 0"),
    ({"classes_per_batch": 11}, "classes_per_batch=11 exceeds the 10 classes"),
])
def test_training_configuration_fails_before_the_run(tmp_path, overrides, message):
    logdir = tmp_path / "run"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        build_trainer(small_cfg(logdir, **overrides))
    assert not logdir.exists()


def test_batch_not_cut_into_the_replicas_fails_before_the_run(tmp_path):
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:2]  # conftest: two logical CPUs
    logdir = tmp_path / "run"
    with pytest.raises(ValueError, match="a batch of 6 images in groups of 2 cannot be cut into 2 shares"):
        build_trainer(small_cfg(logdir, classes_per_batch=3), strategy=tf.distribute.MirroredStrategy(cpus))
    assert not logdir.exists()


def test_logdir_that_cannot_be_created_fails_before_the_run(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=f"^--logdir={tmp_path}/a_file/run: {tmp_path}/a_file is not a directory$"):
        build_trainer(small_cfg(tmp_path / "a_file" / "run"))
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    # Permission bits do not bind root: the check asks os.access, so the test answers for the folder.
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(readonly) and access(path, mode))
    with pytest.raises(ValueError, match=f"^--logdir={readonly}/new/run: directory {readonly} is not writable$"):
        build_trainer(small_cfg(readonly / "new" / "run"))
    assert os.listdir(readonly) == []


# -- datasets ----------------------------------------------------------------------------------
def test_truncated_hdf5_is_one_error_naming_the_file(tmp_path):
    path = truncated_dataset(str(tmp_path / "cut.h5"))
    with pytest.raises(DatasetError, match="^" + re.escape(f"{path} cannot be read (Unable to synchronously open "
                                                           f"file (truncated file: eof = ")):
        open_dataset(path)
    assert issubclass(DatasetError, ValueError)  # what train/main.py prints as one line


def test_killed_conversion_partials_are_removed_by_the_next_run(tmp_path, capsys):
    root = tmp_path / "tree"
    for split, name in [("train", "a"), ("train", "b"), ("test", "c")]:
        (root / split / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / split / name / f"{i}.png")
    out = str(tmp_path / "out.h5")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file, stale_dir = partial_name(out, dead.pid), partial_name(out, dead.pid)  # hdf5 / tfrecord kinds
    open(stale_file, "w").close()
    os.makedirs(os.path.join(stale_dir, "shards"))
    live = partial_name(out, os.getpid())  # a writer still running: not stale
    other = partial_name(str(tmp_path / "other.h5"), dead.pid)  # another output's
    for path in (live, other):
        open(path, "w").close()
    code = folder.main(["--root", str(root), "--output", out, "--size", "8", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    removed = [line for line in err.splitlines() if line.startswith("removed")]
    assert removed == [f"removed 2 stale temporary output(s) of an interrupted write of {out}: "
                       f"{', '.join(sorted(os.path.basename(p) for p in (stale_file, stale_dir)))}"]
    assert sorted(os.listdir(tmp_path)) == sorted(["tree", "out.h5", os.path.basename(live), os.path.basename(other)])
    assert open_dataset(out).split("train").num_examples == 4
    # Killed while deleting the output it replaced: that old copy is stale once the new one is in place.
    old_copy = partial_name(out, dead.pid) + ".old"
    os.makedirs(old_copy)
    assert folder.main(["--root", str(root), "--output", out, "--size", "8", "--workers", "1", "--overwrite"]) == 0
    assert f"interrupted write of {out}: {os.path.basename(old_copy)}" in capsys.readouterr().err
    assert not os.path.exists(old_copy)


def test_the_dvml_layout_writer_removes_its_killed_partials_too(tmp_path, capsys):
    from dmltf.data.raw.dvml import DvmlWriter

    out = str(tmp_path / "cars.hdf5")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = partial_name(out, dead.pid)
    open(stale, "w").close()
    writer = DvmlWriter(out, num_examples=1)
    assert not os.path.exists(stale)
    assert f"interrupted write of {out}: {os.path.basename(stale)}" in capsys.readouterr().err
    assert os.path.basename(writer._tmp).startswith(f".cars.hdf5.partial-{os.getpid()}-")
    writer._file.close()


# -- evaluate.py / infer.py: one error surface ---------------------------------------------------
@pytest.fixture(scope="module")
def entry_points(tmp_path_factory):
    """{case: (result, expected message start, paths that must not exist)}; every script started at once."""
    tmp = tmp_path_factory.mktemp("entry")
    model = str(tmp / "export" / "embedding_model.keras")
    os.makedirs(os.path.dirname(model))
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]).save(model)
    with open(tmp / "export" / "input_spec.json", "w") as f:
        json.dump({"augmentation": "none", "preprocessing": "none", "image_size": 0, "input_shape": [8, 8, 1]}, f)
    not_a_model = tmp / "export" / "notes.keras"
    not_a_model.write_text("not a model")
    cut, dataset = truncated_dataset(str(tmp / "cut.h5")), small_dataset(str(tmp / "small.h5"))
    missing = tmp / "missing"
    cases = {  # name: (script, args, expected message start, paths that must not exist)
        "main.py configuration": ("main.py", ["--dataset=digits", "--epochs=1", "--eval_metrics=recall@1,bogus",
                                              f"--logdir={missing}"],
                                  "--eval_metrics: Unknown metric 'bogus'; valid names: recall@K", [missing]),
        "main.py dataset": ("main.py", [f"--dataset={cut}", "--epochs=1", f"--logdir={missing}"],
                            f"{cut} cannot be read (Unable to synchronously open file (truncated file", [missing]),
        "unknown metric": ("evaluate.py", ["--run=" + str(missing), "--metrics=recall@1,bogus"],
                           "--metrics: Unknown metric 'bogus'", []),
        "bad run": ("evaluate.py", [f"--run={tmp}"], f"{tmp}/config.json not found: --run must be", []),
        # A model that does not exist either: the output is checked first, before any embedding.
        "evaluate output": ("evaluate.py", ["--model=" + str(missing / "m.keras"), f"--dataset={cut}",
                                            f"--output_json={missing}/m.json"],
                            f"--output_json={missing}/m.json: directory {missing} does not exist", [missing]),
        "infer output": ("infer.py", ["--model=" + str(missing / "m.keras"), f"--dataset={cut}",
                                      f"--output={missing}/e.npy"],
                         f"--output={missing}/e.npy: directory {missing} does not exist", [missing]),
        "unknown split": ("evaluate.py", [f"--model={model}", f"--dataset={dataset}", "--split=val"],
                          f"{dataset} has no split 'val'; valid splits: test", []),
        "not a model": ("infer.py", [f"--model={not_a_model}", f"--dataset={cut}", f"--output={tmp}/a.npy"],
                        f"--model={not_a_model} is not a Keras model file", [tmp / "a.npy"]),
        "truncated dataset": ("infer.py", [f"--model={model}", f"--dataset={cut}", f"--output={tmp}/b.npy"],
                              f"{cut} cannot be read (Unable to synchronously open file (truncated file",
                              [tmp / "b.npy", tmp / "b.npy.tmp.npy"]),
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    running = {name: start_script(os.path.join(ROOT, "train", script), *args, env=env)
               for name, (script, args, _, _) in cases.items()}
    return {name: (process.finish(), cases[name][2], cases[name][3]) for name, process in running.items()}


@pytest.mark.parametrize("case", ["main.py configuration", "main.py dataset", "unknown metric", "bad run",
                                  "evaluate output", "infer output", "unknown split", "not a model",
                                  "truncated dataset"])
def test_entry_point_errors_are_one_line(entry_points, case):
    result, message, absent = entry_points[case]
    assert error_line(result).startswith(f"error: {message}")
    assert not [p for p in absent if os.path.exists(p)]


def test_a_damaged_run_file_is_named(tmp_path):
    """config.json, history.json and an export's input_spec.json that do not parse are one
    ValueError naming the file (train/cli.run prints it as one error line)."""
    from dmltf.training import inference
    from dmltf.training.trainer import read_history

    (tmp_path / "config.json").write_text('{"dataset": "digi')
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / 'config.json'} is damaged: ")):
        inference.from_run(str(tmp_path))
    (tmp_path / "history.json").write_bytes(b"\xff\xfe[")
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / 'history.json'} is damaged: ")):
        read_history(str(tmp_path))
    export = tmp_path / "export"
    export.mkdir()
    (export / "embedding_model.keras").write_bytes(b"")
    (export / "input_spec.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="^" + re.escape(f"{export / 'input_spec.json'} is damaged: ")):
        inference.from_export(str(export / "embedding_model.keras"))
