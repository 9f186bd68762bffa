"""Absolute sum of each row's entries: pytorch-metric-learning 2.9
``regularizers/zero_mean_regularizer.py``: mean over rows of ``|sum_d x_id|``.

Example:
    >>> import numpy as np
    >>> from dmltf.regularizers import get
    >>> float(get("zero_mean")(np.array([[1.0, -3.0], [2.0, 2.0]], "float32")))
    3.0
"""
from keras import ops

from dmltf.regularizers import register
from dmltf.regularizers.base import Regularizer


@register("zero_mean")
class ZeroMeanRegularizer(Regularizer):
    row_wise = True

    def row_terms(self, rows):
        return ops.abs(ops.sum(rows, axis=1))
