"""Smooth-AP: a smoothed average-precision loss.

Reference: Brown, Xie, Kalogeiton & Zisserman 2020, "Smooth-AP: Smoothing the Path Towards
Large-Scale Image Retrieval" (``Andrew-Brown1/Smooth_AP``, ``src/Smooth_AP_loss.py``), the
criterion of LM-Metric (``criteria/smoothap.py``, METHODS.md 2.3). For query q and item i,
with similarities S and ``sg(x) = sigmoid(clip(x / tau, -50, 50))``:
``rank_all(q, i) = 1 + sum_{j != i} sg(S_qj - S_qi)``,
``rank_pos(q, i) = 1 + sum_{j != i, j positive} sg(S_qj - S_qi)``,
``AP_q = mean over positive items i of rank_pos / rank_all`` and the loss is ``1 - mean_q AP_q``.
As in the reference, when the references are the batch the query itself is one of the items
and one of its own positives. Queries without another positive are left out (a batch
without positive pairs gives 0). Items are the pairs the miner keeps (default: all).
Memory is O(B * R^2). Sample weights: a query's term weighs w_q; an item j counts w_j in the
ranks (the item being ranked counts 1) and the mean over positive items weighs each by w_i.

``rank_weights`` (a keyword of the call, [R], default 1): LM-Metric's learned per-item weights
(METHODS.md 2.3), each scaling its item's all-items rank sum:
``rank_all(q, i) = 1 + rw_i sum_{j != i} sg(S_qj - S_qi)``; ``rank_pos`` is unchanged.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], "float32")
    >>> round(float(get("smooth_ap")(np.array([0, 0, 1, 1]), x)), 4)  # positives ranked first
    0.0
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, safe_divide
from dmltf.miners.base import pair_masks


@register("smooth_ap")
class SmoothAPLoss(PairLoss):
    default_distance = "cosine"
    requires_similarity = True
    takes_rank_weights = True

    def __init__(self, tau=0.01, **kwargs):
        super().__init__(**kwargs)
        self.tau = float(tau)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights, rank_weights=None):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        b, r = ops.shape(mat)[0], ops.shape(mat)[1]
        pos, neg = pair_masks(mined, mat)
        items = ops.logical_or(pos, neg)
        has_pos = ops.any(pos, axis=1)
        if same_source:
            own = ops.cast(ops.eye(b), "bool")
            pos, items = ops.logical_or(pos, own), ops.logical_or(items, own)
        # above[q, i, j] = sg(S_qj - S_qi) for j != i: item j ranks above item i.
        diff = ops.expand_dims(mat, 1) - ops.expand_dims(mat, 2)
        above = ops.sigmoid(ops.clip(diff / self.tau, -50.0, 50.0)) * (1.0 - ops.eye(r))
        item_w = ops.expand_dims(weights.ref, 0)
        items_w, pos_w = ops.where(items, item_w, 0.0), ops.where(pos, item_w, 0.0)
        rank_sum = ops.sum(above * ops.expand_dims(items_w, 1), axis=2)
        if rank_weights is not None:
            rank_sum = rank_sum * ops.reshape(ops.cast(rank_weights, "float32"), (1, -1))
        rank_all = 1.0 + rank_sum
        rank_pos = 1.0 + ops.sum(above * ops.expand_dims(pos_w, 1), axis=2)
        ap = safe_divide(ops.sum(pos_w * rank_pos / rank_all, axis=1), ops.sum(pos_w, axis=1))
        return ops.where(has_pos, 1.0 - ap, 0.0), ops.where(has_pos, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "tau": self.tau}
