"""RegularFace (Zhao et al., "RegularFace: Deep Face Recognition via Exclusive
Regularization", CVPR 2019): pytorch-metric-learning 2.9
``regularizers/regular_face_regularizer.py``: the mean over rows of the cosine similarity of
each row with its most similar other row (the choice of that row carries no gradient).
One row has no other row: 0.

Example:
    >>> import numpy as np
    >>> from dmltf.regularizers import get
    >>> round(float(get("regular_face")(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], "float32"))), 4)
    0.7071
"""
from keras import ops

from dmltf.regularizers import register
from dmltf.regularizers.base import Regularizer, unit_rows


@register("regular_face")
class RegularFaceRegularizer(Regularizer):
    def compute(self, rows):
        unit = unit_rows(rows)
        cos = ops.matmul(unit, ops.transpose(unit))
        count = ops.shape(rows)[0]
        others = ops.where(ops.eye(count) > 0, -1e30, cos)
        nearest = ops.stop_gradient(ops.one_hot(ops.argmax(others, axis=1), count))
        terms = ops.sum(cos * nearest, axis=1)
        return ops.where(count > 1, ops.mean(terms), 0.0)
