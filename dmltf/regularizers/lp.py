"""Lp norm of each row, to a power: pytorch-metric-learning 2.9
``regularizers/lp_regularizer.py`` (``LpRegularizer(p=2, power=1)``): mean over rows of
``||x_i||_p ** power``.

Deviation: a zero row has gradient 0 (the norm's subgradient), also where p <= 1.

Example:
    >>> import numpy as np
    >>> from dmltf.regularizers import get
    >>> float(get("lp")(np.array([[3.0, 4.0], [0.0, 0.0]], "float32")))
    2.5
"""
from keras import ops

from dmltf.regularizers import register
from dmltf.regularizers.base import Regularizer


@register("lp")
class LpRegularizer(Regularizer):
    row_wise = True

    def __init__(self, p=2, power=1):
        if not p > 0:
            raise ValueError(f"lp regularizer: p={p!r}, expected a number > 0")
        self.p, self.power = float(p), float(power)

    def row_terms(self, rows):
        summed = ops.sum(ops.power(ops.abs(rows), self.p), axis=1)
        nonzero = summed > 0
        norms = ops.where(nonzero, ops.power(ops.where(nonzero, summed, 1.0), 1.0 / self.p), 0.0)
        return norms if self.power == 1 else ops.power(norms, self.power)

    def get_config(self):
        return {"p": self.p, "power": self.power}
