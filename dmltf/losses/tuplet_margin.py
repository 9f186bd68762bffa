"""Tuplet margin loss.

Reference: Yu & Tao 2019, "Deep Metric Learning with Tuplet Margin Loss" (ICCV); parameters
and reduction as pytorch-metric-learning 2.9 ``TupletMarginLoss``. With cosine similarities
s = cos(theta), every positive pair (i, p) is one term

    log(1 + sum_{n in N(i)} exp(scale (s_in - cos(theta_ip - margin))))

over anchor i's negatives N(i); the default reduction is the mean over the positive pairs.
Defaults: margin 5.73 (degrees; about 0.1 rad), scale 64, cosine similarity (required, as in
PML), all pairs; a miner's pairs are the positives and the per-anchor negatives used (from a
triplet miner each pair once; PML repeats a pair once per triplet it is in). A positive
pair whose anchor has no negative adds a 0 term; a batch without a positive pair gives 0.
The paper's intra-pair variance regulariser is the separate ``intra_pair_variance`` loss.
Sample weights: a positive pair (i, p) weighs w_i w_p, each negative's exponential w_n.

Deviation: the positive cosine is clipped to [-1 + 1e-6, 1 - 1e-6] before the arccos, so a
positive pair of identical embeddings gets a finite (zero) gradient instead of PML's NaN.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], "float32")
    >>> round(float(get("tuplet_margin", margin=0.0, scale=1.0)(np.array([0, 0, 1]), x)), 4)
    0.4846
"""
import math

from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss
from dmltf.losses.ntxent import softplus_over_negatives
from dmltf.miners.base import pair_masks

_COS_LIMIT = 1.0 - 1e-6


@register("tuplet_margin")
class TupletMarginLoss(PairLoss):
    default_distance = "cosine"
    requires_similarity = True

    def __init__(self, margin=5.73, scale=64.0, **kwargs):
        super().__init__(**kwargs)
        if self.distance.name != "cosine":
            raise ValueError(f"tuplet_margin is defined on cosine similarities (arccos), not {self.distance.name!r}")
        self.margin = float(margin)
        self.scale = float(scale)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        angle = ops.arccos(ops.clip(mat, -_COS_LIMIT, _COS_LIMIT))
        pos_logits = self.scale * ops.cos(angle - math.radians(self.margin))
        terms = softplus_over_negatives(pos_logits, self.scale * mat, neg, ops.expand_dims(weights.ref, 0))
        term_weights = ops.where(pos, weights.pairs(), 0.0)
        return ops.reshape(ops.where(pos, terms, 0.0), (-1,)), ops.reshape(term_weights, (-1,))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "scale": self.scale}
