"""Loss values recorded once from reference libraries (``tests/fixtures/pml/*.npz``, written by
the ``record_*.py`` scripts beside them in their own venvs) and dmltf's side of the comparison:
one reader of the recordings and one value-and-gradients helper for every test that uses them."""
import os

import numpy as np
import tensorflow as tf

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


class Recording:
    """An .npz of recorded arrays: ``input__<kind>__<key>`` inputs, ``<case>__<kind>__<key>`` results."""

    def __init__(self, *path):
        self.arrays = np.load(os.path.join(FIXTURES, *path))
        self.files = self.arrays.files

    def __getitem__(self, key):
        return self.arrays[key]

    def __contains__(self, key):
        return key in self.arrays

    def batch(self, kind):
        """(labels, x, ref_labels, refs) of a batch kind; None where the kind has no such array."""
        get = lambda key: self.arrays[f"input__{kind}__{key}"] if f"input__{kind}__{key}" in self.arrays else None  # noqa: E731
        return get("labels"), get("x"), get("ref_labels"), get("refs")

    def recorded(self, case, kind):
        """{key: array} recorded for ``case`` on batch ``kind`` (empty if the reference refused it)."""
        prefix = f"{case}__{kind}__"
        return {key[len(prefix):]: self.arrays[key] for key in self.files if key.startswith(prefix)}


def value_and_grads(loss, labels, x, ref_labels=None, refs=None, sample_weight=None):
    """(value, gradient for x, for refs (None without), [gradient for each trainable weight]);
    a missing gradient is zeros."""
    xt = tf.constant(x, tf.float32)
    rt = None if refs is None else tf.constant(refs, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        if rt is not None:
            tape.watch(rt)
        value = loss(labels, xt, ref_labels, rt, sample_weight=sample_weight)
    dense = lambda g, like: np.zeros(tuple(like.shape)) if g is None else np.asarray(tf.convert_to_tensor(g))  # noqa: E731
    grad_x = dense(tape.gradient(value, xt), x)
    grad_refs = None if rt is None else dense(tape.gradient(value, rt), refs)
    grad_w = [dense(tape.gradient(value, v), v) for v in loss.trainable_weights]
    return float(value), grad_x, grad_refs, grad_w
