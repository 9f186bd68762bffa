"""Test set-up: quiet TF, no network caches in $HOME, two logical CPU devices, and the backend run.

The CPU is split before TensorFlow initialises so that MirroredStrategy tests have two
replicas; everything else runs on the default strategy (the first device).

Under ``KERAS_BACKEND=jax`` (or ``torch``) only the tests marked ``backend_neutral`` (a module's
``pytestmark``, less its tests marked ``tensorflow_only``) run, with the doctests of the
backend-neutral modules (:data:`NEUTRAL_DOCTESTS`, from ``tests/backend_neutral.txt``); the rest are TensorFlow's (trainer, data
pipeline, converters, ``tf.function``) and are skipped, saying so.
"""
import os
import tempfile

_tmp = tempfile.mkdtemp(prefix="dmltf-tests-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", os.path.join(_tmp, "keras"))
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(_tmp, "tfds"))

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

# The scripts that recorded reference values ran once in their own venvs (torch, TF 2.15):
# --doctest-modules must not import them here.
collect_ignore_glob = ["fixtures/*/record*.py"]


import pytest  # noqa: E402

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What CI runs again on JAX: the modules whose math is keras.ops only (their doctests) and the
# test files with backend_neutral tests.
with open(os.path.join(REPO, "tests", "backend_neutral.txt")) as _f:
    BACKEND_NEUTRAL_PATHS = _f.read().split()
NEUTRAL_DOCTESTS = [os.path.join(REPO, p) for p in BACKEND_NEUTRAL_PATHS if p.startswith("dmltf")]


def _backend_neutral(item):
    if item.get_closest_marker("backend_neutral"):
        return not item.get_closest_marker("tensorflow_only")
    path = str(item.path)
    return isinstance(item, pytest.DoctestItem) and any(path == p or path.startswith(p + os.sep)
                                                         for p in NEUTRAL_DOCTESTS)


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only (not backend_neutral) under KERAS_BACKEND={BACKEND}")
    for item in items:
        if not _backend_neutral(item):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mini_sop(tmp_path_factory):
    """tests/raw_datasets.py's miniature SOP as an HDF5 file (training classes 1, 2 of super-class 1
    and 3 of super-class 3)."""
    from recipes import convert_mini_sop

    return convert_mini_sop(tmp_path_factory.mktemp("sop"))
