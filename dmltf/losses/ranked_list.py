"""Ranked list loss (RLL).

Reference: Wang, Hua, Kodirov, Hu, Garnier & Robertson 2019, "Ranked List Loss for Deep Metric
Learning" (CVPR); parameters and reduction as pytorch-metric-learning 2.9 ``RankedListLoss``.
For anchor i with distances d_ij, the violating positives P*(i) (d_ij > alpha - margin) and
negatives N*(i) (d_ij < alpha), and the weights w+_ij = exp(Tp (d_ij - (alpha - margin))),
w-_ij = exp(Tn (alpha - d_ij)):

    L_P(i) = sum_{P*} w+_ij (d_ij - (alpha - margin)) / (sum_{P*} w+_ij + eps R)
    L_N(i) = sum_{N*} w-_ij (alpha - d_ij) / (sum_{N*} w-_ij + eps R)
    loss_i = (1 - imbalance) L_P(i) + imbalance L_N(i)

and the default reduction is the mean over all anchors (an anchor without violations adds 0).
``eps R`` is PML's stabiliser, 1e-5 per reference in the row (R references, the anchor itself
included), kept for the exact values. Defaults: margin 0.4, neg_temperature (Tn) 10, imbalance
0.5, alpha 1.2, pos_temperature (Tp) 0 (RLL-Simpler), euclidean distance, all pairs (a miner's
pairs restrict P and N). PML requires margin and Tn (0.4 and 10 are dmltf's choices) and its
alpha defaults to None, 1 + margin / 2: ``alpha=None`` means that here too, and the default 1.2
is its value at the default margin (a flag needs a number: set ``--loss_ranked_list_alpha``
with the margin). With a similarity (cosine, dot) the violations are read the other way round:
alpha - margin - s for a positive, s - alpha for a negative. Weighted sums are computed from
exponentials shifted by their maximum, so large temperatures do not overflow.

Sample weights: anchor i's term weighs w_i; inside it every pair's exponential (and its
share of eps R) weighs w_j.

Deviations: PML skips a pair whose distance is exactly 0 (its "unset" marker), a duplicated
negative included; here such a negative is violating like any other. PML uses the embeddings'
L2-normalised euclidean distance by default; dmltf's distances take the embeddings as given
(normalise them in the model, or use ``distance="cosine"``). With references (PML refuses
them) an anchor's lists are over the references.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.1]], "float32")
    >>> # violations (alpha - m = 0.8, alpha = 1.2): anchor 0: positive 1 - 0.8, negative 1.2 - 1.1;
    >>> # anchor 1: positive 0.2 (its negative is at 1.49); anchor 2: negative 0.1. Mean of halves:
    >>> round(float(get("ranked_list")(np.array([0, 0, 1]), x)), 4)  # (0.15 + 0.1 + 0.05) / 3
    0.1
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss
from dmltf.miners.base import pair_masks

_EPS = 1e-5  # PML's, per reference


def weighted_violation(violation, mask, temperature, ref_w):
    """[B]: sum_mask w_j e^(T v_ij) v_ij / (sum_mask w_j e^(T v_ij) + eps sum_j w_j), shifted by the
    row's largest exponent so that exp never overflows."""
    exponent = ops.where(mask, temperature * violation, -1e30)
    shift = ops.maximum(ops.max(exponent, axis=1, keepdims=True), 0.0)
    scaled = ops.where(mask, ref_w * ops.exp(exponent - shift), 0.0)
    eps = _EPS * ops.sum(ref_w, axis=1, keepdims=True) * ops.exp(-shift)
    denominator = ops.sum(scaled, axis=1) + ops.squeeze(eps, 1)
    return ops.sum(scaled * ops.where(mask, violation, 0.0), axis=1) / ops.where(denominator > 0, denominator, 1.0)


@register("ranked_list")
class RankedListLoss(PairLoss):
    def __init__(self, margin=0.4, neg_temperature=10.0, imbalance=0.5, alpha=1.2, pos_temperature=0.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.neg_temperature = float(neg_temperature)
        self.imbalance = float(imbalance)
        if not 0.0 <= self.imbalance <= 1.0:
            raise ValueError(f"ranked_list: imbalance must lie in [0, 1], got {imbalance}")
        self.alpha = None if alpha is None else float(alpha)
        self.pos_temperature = float(pos_temperature)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        alpha = 1.0 + self.margin / 2.0 if self.alpha is None else self.alpha
        pos_violation = -distance.margin(mat, alpha - self.margin)  # d - (alpha - m), or (alpha - m) - s
        neg_violation = distance.margin(mat, alpha)  # alpha - d, or s - alpha
        ref_w = ops.expand_dims(weights.ref, 0)
        loss_p = weighted_violation(pos_violation, ops.logical_and(pos, pos_violation > 0), self.pos_temperature, ref_w)
        loss_n = weighted_violation(neg_violation, ops.logical_and(neg, neg_violation > 0), self.neg_temperature, ref_w)
        return (1.0 - self.imbalance) * loss_p + self.imbalance * loss_n, weights.query

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "neg_temperature": self.neg_temperature,
                "imbalance": self.imbalance, "alpha": self.alpha, "pos_temperature": self.pos_temperature}
