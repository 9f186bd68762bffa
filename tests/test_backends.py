"""dmltf's math on every Keras 3 backend: what ``dmltf.backend`` adds to ``keras.ops``, checked
against numpy; ``import dmltf.losses`` (and miners, distances, regularizers) under JAX imports no
TensorFlow; and the README's JAX example trains (run in a subprocess, under ``KERAS_BACKEND=jax``).
"""
import ast
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from dmltf.backend import check_labels_below, searchsorted_rows
from recorded_losses import compiled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.backend_neutral
@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_rows_matches_numpy_row_by_row(side):
    rng = np.random.default_rng(0)
    rows = np.sort(rng.integers(0, 5, size=(4, 7)).astype("float32"), axis=1)  # ties in every row
    values = rng.integers(-1, 6, size=(4, 9)).astype("float32")
    values[0, :3] = rows[0, :3]  # exactly on a sorted value
    want = np.stack([np.searchsorted(r, v, side=side) for r, v in zip(rows, values)])
    np.testing.assert_array_equal(np.asarray(searchsorted_rows(rows, values, side=side)), want)
    np.testing.assert_array_equal(np.asarray(compiled(lambda r, v: searchsorted_rows(r, v, side=side))(rows, values)),
                                  want)


@pytest.mark.backend_neutral
def test_labels_in_range_pass_through_and_others_are_refused():
    labels = np.array([0, 3, 4], "int32")
    np.testing.assert_array_equal(np.asarray(check_labels_below(labels, 5, "a test")), labels)
    error = ValueError if keras.backend.backend() != "tensorflow" else Exception
    with pytest.raises(error, match="label >= num_classes=4 given to a test"):
        np.asarray(check_labels_below(labels, 4, "a test"))
    with pytest.raises(error, match="label below 0 given to a test"):
        np.asarray(check_labels_below(np.array([0, -1], "int32"), 4, "a test"))


def run_on_jax(code):
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def readme_jax_example():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    match = re.search(r"<!-- jax-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its JAX example (marked <!-- jax-example -->)"
    return match.group(1)


def test_the_readme_jax_example_trains_without_importing_tensorflow():
    """The example prints its first and last epoch's loss and the retrieval metrics: training
    lowers the loss, the metrics are computed, and neither the losses nor the metrics (nor
    anything else the example imports) imported TensorFlow."""
    out = run_on_jax(readme_jax_example() + textwrap.dedent("""
        import sys
        import dmltf.distances, dmltf.miners, dmltf.regularizers
        print("tensorflow imported:", "tensorflow" in sys.modules)
    """))
    backend, first, last = re.search(r"(\w+): loss (\S+) -> (\S+)", out).groups()
    assert backend == "jax" and float(last) < float(first), out
    metrics = ast.literal_eval(re.search(r"(\{.*\})", out).group(1))  # the dict evaluate returned, as printed
    assert 0.0 <= metrics["recall@1"] <= 1.0 and 0.0 <= metrics["map@r"] <= 1.0, out
    assert "tensorflow imported: False" in out, out


def test_the_jax_run_lists_every_file_with_backend_neutral_tests():
    """tests/backend_neutral.txt (what CI runs again on JAX) lists the test files that mark tests
    backend_neutral, and modules that exist: a new backend-neutral test file is not left out."""
    with open(os.path.join(ROOT, "tests", "backend_neutral.txt")) as f:
        paths = f.read().split()
    assert all(os.path.exists(os.path.join(ROOT, p)) for p in paths), paths
    listed = {p for p in paths if p.startswith("tests/")}
    tests = os.path.join(ROOT, "tests")
    marked = set()
    for name in os.listdir(tests):
        if name.startswith("test_") and name.endswith(".py"):
            with open(os.path.join(tests, name)) as f:
                if "pytest.mark.backend_neutral" in f.read():
                    marked.add(f"tests/{name}")
    assert listed == marked
