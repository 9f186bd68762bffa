"""Lifted structured loss, TF-contrib form.

Reference: Song, Xiang, Jegelka & Savarese 2016, "Deep Metric Learning via Lifted Structured
Feature Embedding"; ``tf.contrib.losses.metric_learning.lifted_struct_loss`` (METHODS.md 1.5).
For a positive pair (i, j), with N_i the negatives of i:
``J_ij = log(sum_{k in N_i} exp(margin - D_ik) + sum_{l in N_j} exp(margin - D_jl)) + D_ij``
and the loss is ``mean over ordered positive pairs of 0.5 [J_ij]_+^2`` (= TF-contrib's
``1/(2|P|) sum over unordered pairs``), D euclidean on the embeddings as given. A positive
pair without any negative adds 0 but is counted, as in TF-contrib.

With references, i is a query and j a reference: j's negatives are taken among the queries
(column j of the [B, R] matrix), which is TF-contrib's form when the references are the batch
and needs no [R, R] matrix. Deviation: a batch without positive pairs gives 0 (TF-contrib: NaN).
Sample weights: J_ij weighs w_i w_j and each exponential inside it w_k or w_l.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("lifted_structure")
    >>> x = np.array([[0.0], [0.5], [3.0]], "float32")
    >>> round(float(loss(np.array([0, 0, 1]), x)), 4)  # J = log(e^-2 + e^-1.5) + 0.5 < 0
    0.0
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp
from dmltf.miners.base import as_distance, pair_masks


@register("lifted_structure")
class LiftedStructureLoss(PairLoss):
    def __init__(self, margin=1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def pair_loss(self, mat, mined, distance, weights):
        b, r = ops.shape(mat)[0], ops.shape(mat)[1]
        pos, neg = pair_masks(mined, mat)
        neg_logits = distance.margin(mat, self.margin)  # margin - D
        query_lse = log_sum_exp(neg_logits, neg, axis=1, weights=ops.expand_dims(weights.ref, 0))
        ref_lse = log_sum_exp(neg_logits, neg, axis=0, weights=ops.expand_dims(weights.query, 1))
        query_side = ops.broadcast_to(ops.expand_dims(query_lse, 1), (b, r))
        ref_side = ops.broadcast_to(ops.expand_dims(ref_lse, 0), (b, r))
        query_has = ops.broadcast_to(ops.any(neg, axis=1, keepdims=True), (b, r))
        ref_has = ops.broadcast_to(ops.any(neg, axis=0, keepdims=True), (b, r))
        both_sides = log_sum_exp(ops.stack([query_side, ref_side], -1), ops.stack([query_has, ref_has], -1), axis=-1)
        j = both_sides + as_distance(mat, distance)
        losses = ops.where(ops.logical_or(query_has, ref_has), 0.5 * ops.square(ops.relu(j)), 0.0)
        return losses, ops.where(pos, weights.pairs(), 0.0)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
