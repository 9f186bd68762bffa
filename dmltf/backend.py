"""What the losses and miners need beyond ``keras.ops``, written once for every Keras 3 backend.

dmltf's math (distances, losses, miners, regularizers) is ``keras.ops`` so that it runs on
TensorFlow, JAX and PyTorch alike; the two functions here fill the gaps without importing
TensorFlow on the other backends:

- :func:`searchsorted_rows`: ``searchsorted`` row by row (``keras.ops.searchsorted`` is 1-D only).
- :func:`check_labels_below`: the proxy losses' label check, a clear error at run time also
  inside a compiled function (``tf.function``, ``jax.jit``).

Example:
    >>> import numpy as np
    >>> from dmltf.backend import searchsorted_rows
    >>> np.asarray(searchsorted_rows(np.array([[0.0, 1.0, 2.0], [5.0, 6.0, 7.0]]), np.array([[1.0], [9.0]]),
    ...                              side="right")).tolist()
    [[2], [3]]
"""
import functools

import keras
import numpy as np
from keras import ops


def searchsorted_rows(sorted_rows, values, side="left"):
    """[B, Q] int32: for each row b, where ``values[b]`` would go in ``sorted_rows[b]`` ([B, R],
    each row ascending) to keep it sorted; ``side`` as ``numpy.searchsorted``."""
    located = ops.vectorized_map(lambda row: ops.searchsorted(row[0], row[1], side=side), (sorted_rows, values))
    return ops.cast(located, "int32")


def _refuse_labels_outside(labels, upper, what):
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise ValueError(f"label below 0 given to {what}")
    if labels.size and labels.max() >= upper:
        raise ValueError(f"label >= num_classes={upper} given to {what}")


def check_labels_below(labels, upper, what):
    """``labels`` (int), having checked 0 <= labels < ``upper`` when they are computed.

    A label outside raises, naming ``what`` and ``upper``: TensorFlow's ``InvalidArgumentError``
    (eager and in a ``tf.function``), ``ValueError`` on JAX (eager; inside ``jax.jit`` JAX
    re-raises it as a runtime error with the same message) and on PyTorch.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (only this backend may import TensorFlow)

        checks = [tf.debugging.assert_non_negative(labels, message=f"label below 0 given to {what}"),
                  tf.debugging.assert_less(labels, tf.cast(upper, labels.dtype),
                                           message=f"label >= num_classes={upper} given to {what}")]
        with tf.control_dependencies(checks):
            return tf.identity(labels)
    refuse = functools.partial(_refuse_labels_outside, upper=upper, what=what)
    if backend == "jax":
        import jax  # noqa: PLC0415

        jax.debug.callback(refuse, labels)
    else:
        refuse(ops.convert_to_numpy(labels))
    return labels
