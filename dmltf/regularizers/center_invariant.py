"""Center-invariant regularizer (Wu et al., "Deep Face Recognition with Center Invariant
Loss", 2017): pytorch-metric-learning 2.9 ``regularizers/center_invariant_regularizer.py``:
with ``n_i = ||w_i||^2``, the mean over rows of ``(n_i - mean_j n_j)^2 / 4``; it pulls the
class weights to equal norms.

Example:
    >>> import numpy as np
    >>> from dmltf.regularizers import get
    >>> float(get("center_invariant")(np.array([[1.0, 0.0], [0.0, 3.0]], "float32")))
    4.0
"""
from keras import ops

from dmltf.regularizers import register
from dmltf.regularizers.base import Regularizer


@register("center_invariant")
class CenterInvariantRegularizer(Regularizer):
    def compute(self, rows):
        squared_norms = ops.sum(ops.square(rows), axis=1)
        return ops.mean(ops.square(squared_norms - ops.mean(squared_norms)) / 4.0)
