"""bench/gpu_check.py --smoke: the GPU check command runs on this CPU machine and prints every
row of its table (the real figures come from a GPU machine)."""
import re

from recipes import run_script


def test_smoke_run_prints_every_row():
    done = run_script("bench/gpu_check.py", "--smoke", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    machine = re.search(r"^machine: (.*); \d+ CPU cores; TensorFlow [\d.]+, Keras [\d.]+, faiss [\d.]+ \((\d+) GPUs\)",
                        out, re.M)
    assert machine, out
    mixed = "mixed bfloat16" if machine[1] == "no GPU" else "mixed float16"  # a CPU's mixed precision is bfloat16
    # One training row per precision, each with its figures.
    for precision in ("float32", mixed, rf"{mixed} \+ XLA"):
        assert re.search(rf"^small_cnn +8 +{precision} +[\d.]+ +[\d.]+ +[\d.]+$", out, re.M), (precision, out)
    # The input pipeline's own table, one row per format, and the core count it ran on.
    assert re.search(r"^input pipeline on \d+ CPU cores", out, re.M), out
    for fmt in ("hdf5 raw", "hdf5 jpeg", "tfrecord raw", "tfrecord jpeg"):
        assert re.search(rf"^{fmt} +\d+", out, re.M), (fmt, out)
    assert re.search(r"^evaluation: exact kNN of 2,000 x 64", out, re.M), out
    assert re.search(r"^faiss-cpu +[\d.]+ s$", out, re.M), out
    if int(machine[2]):
        assert re.search(r"^faiss-gpu +[\d.]+ s$", out, re.M), out
    else:
        assert "faiss-gpu  not run: faiss sees no GPU" in out
    assert re.search(r"^peak GPU memory: (no GPU|[\d.]+ GiB \(GPU:0, TensorFlow's allocator\))$", out, re.M), out
    assert re.search(r"^total wall time: \d+ s$", out, re.M), out
