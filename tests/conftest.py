"""Test set-up: quiet TF, no network caches in $HOME, and two logical CPU devices.

The CPU is split before TensorFlow initialises so that MirroredStrategy tests have two
replicas; everything else runs on the default strategy (the first device).
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


@pytest.fixture(scope="session")
def mini_sop(tmp_path_factory):
    """tests/raw_datasets.py's miniature SOP as an HDF5 file (training classes 1, 2 of super-class 1
    and 3 of super-class 3)."""
    from recipes import convert_mini_sop

    return convert_mini_sop(tmp_path_factory.mktemp("sop"))
