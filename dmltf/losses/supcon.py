"""Supervised contrastive loss (SupCon).

Reference: Khosla et al. 2020, "Supervised Contrastive Learning" (official
``HobbitLong/SupContrast``, the L_out form); parameters and reduction as pytorch-metric-learning
2.9 ``SupConLoss``. With l_ij = s_ij / temperature (s a similarity; for a distance d, -d), per
anchor i with positives P(i) and negatives N(i):

    l_i = -(1 / |P(i)|) sum_{p in P(i)} ( l_ip - log sum_{a in P(i) u N(i)} exp(l_ia) )

and the default reduction is the mean over the anchors with a non-zero term (PML's
``AvgNonZeroReducer``; anchors without a positive add nothing). Defaults: temperature 0.1,
cosine similarity, all pairs (a miner's pairs restrict P(i) and N(i)). As in PML, a batch
without any positive pair or without any negative pair gives 0 (with one class only the
formula would still pull the positives together; PML and dmltf return 0 there). The anchor's
own pair is never in the denominator (SupContrast masks it out too).

Sample weights: anchor i's term weighs w_i; inside it each positive of the mean weighs w_p
and each exponential of the denominator the weight of its sample.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], "float32")
    >>> round(float(get("supcon", temperature=0.5)(np.array([0, 1, 0, 1]), x)), 4)  # log(1 + 2 exp(-2))
    0.2395
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp, safe_divide
from dmltf.losses.ntxent import logits_of
from dmltf.miners.base import pair_masks


@register("supcon")
class SupConLoss(PairLoss):
    default_distance = "cosine"
    default_reduction = "mean_nonzero"

    def __init__(self, temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        logits = logits_of(mat, distance, 1.0 / self.temperature)
        ref_w = ops.expand_dims(weights.ref, 0)
        denominator = log_sum_exp(logits, ops.logical_or(pos, neg), axis=1, weights=ref_w)
        pos_w = ops.where(pos, ref_w, 0.0)
        log_prob = logits - ops.expand_dims(denominator, 1)
        mean_log_prob = safe_divide(ops.sum(ops.where(pos, pos_w * log_prob, 0.0), axis=1), ops.sum(pos_w, axis=1))
        usable = ops.logical_and(ops.any(pos), ops.any(neg))
        has_pos = ops.logical_and(ops.any(pos, axis=1), usable)
        return ops.where(has_pos, -mean_log_prob, 0.0), ops.where(has_pos, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
