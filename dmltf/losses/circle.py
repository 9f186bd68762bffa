"""Circle loss (pair-wise labels form).

Reference: Sun et al. 2020, "Circle Loss: A Unified Perspective of Pair Similarity
Optimization" (Eq. 4-6); pytorch-metric-learning ``CircleLoss``. Per anchor, with
similarities s, ``a_p = [1 + m - s_p]_+`` and ``a_n = [s_n + m]_+`` (not differentiated):
``softplus(logsumexp_n(gamma a_n (s_n - m)) + logsumexp_p(-gamma a_p (s_p - 1 + m)))``,
averaged over the anchors that have a positive and a negative. Defaults m=0.25, gamma=256
are the paper's face-recognition / re-id setting (fine-grained retrieval: m=0.4, gamma=80).
Sample weights: an anchor's term weighs w_a and each exponential inside it w_p or w_n.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("circle", m=0.4, gamma=80)
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], "float32")
    >>> float(loss(np.array([0, 0, 1, 1]), x)) > 0
    True
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp
from dmltf.miners.base import pair_masks


@register("circle")
class CircleLoss(PairLoss):
    default_distance = "cosine"
    requires_similarity = True

    def __init__(self, m=0.25, gamma=256.0, **kwargs):
        super().__init__(**kwargs)
        self.m = float(m)
        self.gamma = float(gamma)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        ref_w = ops.expand_dims(weights.ref, 0)
        fixed = ops.stop_gradient(mat)
        pos_logits = -self.gamma * ops.relu(1.0 + self.m - fixed) * (mat - (1.0 - self.m))
        neg_logits = self.gamma * ops.relu(fixed + self.m) * (mat - self.m)
        log_sum = lambda logits, mask: log_sum_exp(logits, mask, axis=1, weights=ref_w)
        logits = log_sum(pos_logits, pos) + log_sum(neg_logits, neg)
        has_both = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        return ops.where(has_both, ops.softplus(logits), 0.0), ops.where(has_both, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "m": self.m, "gamma": self.gamma}
