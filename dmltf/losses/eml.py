"""EML loss (PaddlePaddle's "eml"), in an exactly stable form.

Reference: Huang et al., "Large Scale Strongly Supervised Ensemble Metric Learning" (cited by
PaddlePaddle's README); PaddlePaddle ``models/PaddleCV/metric_learning/losses/emlloss.py``
(METHODS.md 5.3). Per anchor i, with D squared euclidean on the embeddings as given:
``x_i = mean_{j in P_i} exp(D_ij) * mean_{k in N_i} exp(-D_ik)`` and
``loss_i = log(1 + beta x_i) / log(1 + beta)``, averaged over anchors with a positive and a
negative. Evaluated as ``softplus(log beta + log x_i)`` with masked log-sum-exps, which is the
formula itself without overflow. Deviation: Paddle evaluates it piecewise around a bias
``max_j D_ij - min_k D_ik`` of 20 (below: the formula minus ``log(1 + e^-20 / (beta theta)) /
log(1 + beta)``; above: the asymptote ``(log x + log beta) / log(1 + beta)``); those small
differences are not reproduced. Sample weights: an anchor's term weighs w_i and both means
are weighted by the other sample's weight (w_j, w_k).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[0.0], [0.0], [1.0]], "float32")
    >>> round(float(get("eml")(np.array([0, 0, 1]), x)), 4)  # log(1 + 1e5 e^-1) / log(1 + 1e5)
    0.9131
"""
import math

from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp, nonzero_or_one
from dmltf.miners.base import as_distance, pair_masks


@register("eml")
class EMLLoss(PairLoss):
    default_distance = "squared_euclidean"

    def __init__(self, beta=1e5, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        d = as_distance(mat, distance)
        ref_w = ops.expand_dims(weights.ref, 0)
        log_sum = lambda values, mask: log_sum_exp(values, mask, axis=1, weights=ref_w)
        log_count = lambda mask: ops.log(nonzero_or_one(ops.sum(ops.where(mask, ref_w, 0.0), axis=1)))
        log_x = log_sum(d, pos) - log_count(pos) + log_sum(-d, neg) - log_count(neg)
        losses = ops.softplus(math.log(self.beta) + log_x) / math.log1p(self.beta)
        has_both = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        return ops.where(has_both, losses, 0.0), ops.where(has_both, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
