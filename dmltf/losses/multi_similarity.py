"""Multi-similarity loss.

Reference: Wang et al. 2019, "Multi-Similarity Loss with General Pair Weighting for Deep
Metric Learning" (official ``MalongTech/research-ms-loss``,
``ret_benchmark/losses/multi_similarity_loss.py``). Per anchor with similarities s:
``(1/alpha) log(1 + sum_p exp(-alpha (s_ap - base))) + (1/beta) log(1 + sum_n exp(beta (s_an - base)))``
over the mined pairs (default: the multi-similarity miner, epsilon 0.1). As in the official
code an anchor without a mined positive or negative adds 0, and the sum is divided by the
number of anchors. Defaults alpha=2, beta=50, base=0.5 are the official ones (Proxy-Anchor's
baselines); Revisiting-DML uses beta=40, base=0.5. Sample weights: an anchor's term weighs
w_a (the mean divides by the summed anchor weights), each exponential inside it w_p or w_n.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("multi_similarity")
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], "float32")
    >>> round(float(loss(np.array([0, 0, 1, 1]), x)), 4)
    0.6791
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log1p_sum_exp
from dmltf.miners.base import pair_masks


@register("multi_similarity")
class MultiSimilarityLoss(PairLoss):
    default_distance = "cosine"
    default_miner = "multi_similarity"
    requires_similarity = True

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        ref_w = ops.expand_dims(weights.ref, 0)
        pos_term = log1p_sum_exp(-self.alpha * (mat - self.base), pos, axis=1, weights=ref_w) / self.alpha
        neg_term = log1p_sum_exp(self.beta * (mat - self.base), neg, axis=1, weights=ref_w) / self.beta
        has_both = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        return ops.where(has_both, pos_term + neg_term, 0.0), weights.query

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "base": self.base}
