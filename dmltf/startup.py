"""A quiet start for the command-line entry points.

TensorFlow's C++ runtime prints notices while it loads and when it first looks for devices,
before absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them ("All
log messages before absl::InitializeLog() ...", the oneDNN notice, "Could not find cuda
drivers", a failed cuInit on a machine without a GPU), twice per process. The entry points
start TensorFlow inside :func:`start_up_notices_dropped`, which captures the process's stderr
(file descriptor 2, where the C++ runtime writes) and writes back every line but those notices;
``--verbose`` on the command line keeps everything.

Example:
    >>> NOTICES.search("I0000 00:00:1 123 port.cc:153] oneDNN custom operations are on.") is not None
    True
    >>> NOTICES.search("error: something dmltf says") is None
    True
"""
import contextlib
import os
import re
import sys
import tempfile

NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .* rebuild TensorFlow")


def verbose(argv=None):
    """Whether the command line asks for TensorFlow's start-up notices (``--verbose``)."""
    return any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in (sys.argv if argv is None else argv))


@contextlib.contextmanager
def start_up_notices_dropped(keep=False):
    """Runs the body with stderr captured, then writes back every line that is not one of the
    ``NOTICES`` (everything when ``keep``)."""
    if keep:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not NOTICES.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_tensorflow(argv=None):
    """Imports TensorFlow and lists its physical devices (where it tries CUDA), without the
    start-up notices unless ``--verbose``. Logical devices stay unconfigured, so a CPU split
    (``--cpu_replicas``) or a multi-worker strategy may still be set up afterwards."""
    with start_up_notices_dropped(keep=verbose(argv)):
        import tensorflow as tf

        tf.config.list_physical_devices()
