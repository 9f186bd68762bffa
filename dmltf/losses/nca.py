"""Neighbourhood components analysis (NCA) loss.

Reference: Goldberger, Roweis, Hinton & Salakhutdinov 2004, "Neighbourhood Components
Analysis" (NIPS); parameters and reduction as pytorch-metric-learning 2.9 ``NCALoss``. Each
sample picks a neighbour j with probability softmax_j(-softmax_scale d_ij) over the other
samples (over all references when references are given); the loss of anchor i is

    -log sum_{p in P(i)} softmax_p(-softmax_scale d_i.)

the log-probability of picking a positive, and the default reduction is the mean over the
anchors with a positive. Defaults: softmax_scale 1, squared euclidean distance (for a
similarity s the logits are +softmax_scale s), all pairs. A miner restricts the softmax to the
pairs it keeps (positives and negatives of the anchor); PML instead weighs each anchor by how
often the miner used it. Sample weights: anchor i's term weighs w_i, each exponential of the
softmax the weight of its sample.

Deviations: PML's ``LpDistance`` L2-normalises the embeddings (its default); dmltf's distances
use them as given. A batch without a positive pair gives 0 (PML: NaN, the mean of no terms);
PML also drops an anchor whose positives' probability underflows to exactly 0, where here the
log-sum-exp keeps its (large, finite) term.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[0.0], [1.0], [3.0]], "float32")
    >>> round(float(get("nca")(np.array([0, 0, 1]), x)), 4)  # log(1 + e^-8) for 0, log(1 + e^-3) for 1
    0.0245
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp
from dmltf.losses.ntxent import logits_of
from dmltf.miners.base import pair_masks


@register("nca")
class NCALoss(PairLoss):
    default_distance = "squared_euclidean"

    def __init__(self, softmax_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.softmax_scale = float(softmax_scale)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        logits = logits_of(mat, distance, self.softmax_scale)
        ref_w = ops.expand_dims(weights.ref, 0)
        has_pos = ops.any(pos, axis=1)
        everyone = log_sum_exp(logits, ops.logical_or(pos, neg), axis=1, weights=ref_w)
        positives = log_sum_exp(logits, pos, axis=1, weights=ref_w)
        return ops.where(has_pos, everyone - positives, 0.0), ops.where(has_pos, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "softmax_scale": self.softmax_scale}
