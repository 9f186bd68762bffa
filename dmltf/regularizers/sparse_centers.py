"""Sparse centers (Qian et al., "SoftTriple Loss", ICCV 2019, its centre regularizer):
pytorch-metric-learning 2.9 ``regularizers/sparse_centers_regularizer.py``. The rows are
``num_classes`` blocks of ``centers_per_class`` centres (class-major, as the proxies of
``sub_center_arcface``); for every pair i < j of centres of one class the term is
``sqrt(2 + eps - min(2 cos(w_i, w_j), 2))`` (the distance of the unit centres), and the
sum of the terms is divided by twice their count (PML's ``DivisorReducer``); eps is float32's
smallest normal number (PML's ``small_val``).

Example:
    >>> import numpy as np
    >>> from dmltf.regularizers import get
    >>> w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], "float32")
    >>> round(float(get("sparse_centers:num_classes=2,centers_per_class=2")(w)), 4)
    0.3536
"""
import numpy as np
from keras import ops

from dmltf.regularizers import register
from dmltf.regularizers.base import Regularizer, unit_rows


@register("sparse_centers")
class SparseCentersRegularizer(Regularizer):
    def __init__(self, num_classes, centers_per_class):
        self.num_classes, self.centers_per_class = int(num_classes), int(centers_per_class)
        if self.num_classes < 1 or self.centers_per_class < 2:
            raise ValueError(f"sparse_centers: num_classes={num_classes!r}, centers_per_class={centers_per_class!r}; "
                             f"expected >= 1 and >= 2")
        block = np.triu(np.ones((self.centers_per_class,) * 2, bool), k=1)
        self.pairs = np.nonzero(np.kron(np.eye(self.num_classes, dtype=bool), block))  # same-class i < j

    def compute(self, rows):
        total = self.num_classes * self.centers_per_class
        if rows.shape[0] is not None and rows.shape[0] != total:
            raise ValueError(f"sparse_centers: {rows.shape[0]} rows, expected num_classes x centers_per_class "
                             f"= {self.num_classes} x {self.centers_per_class} = {total}")
        unit = unit_rows(rows)
        cos = ops.sum(ops.take(unit, self.pairs[0], axis=0) * ops.take(unit, self.pairs[1], axis=0), axis=1)
        terms = ops.sqrt(2.0 + float(np.finfo(np.float32).tiny) - ops.minimum(2.0 * cos, 2.0))
        return ops.sum(terms) / (2.0 * len(self.pairs[0]))

    def get_config(self):
        return {"num_classes": self.num_classes, "centers_per_class": self.centers_per_class}
