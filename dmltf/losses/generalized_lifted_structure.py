"""Generalized lifted structure loss.

Reference: Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss for Person
Re-Identification", p. 4; pytorch-metric-learning ``GeneralizedLiftedStructureLoss``.
Per anchor a: ``[log sum_p exp(d_ap - pos_margin) + log sum_n exp(neg_margin - d_an)]_+``
(for a similarity s, ``pos_margin - s`` and ``s - neg_margin``), averaged over the anchors
that have a positive and a negative. Sample weights: an anchor's term weighs w_a and each
exponential inside it w_p or w_n.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("generalized_lifted_structure")
    >>> x = np.array([[0.0], [0.5], [1.2]], "float32")
    >>> round(float(loss(np.array([0, 0, 1]), x)), 4)  # anchors 0, 1: 0.5 + (1 - 1.2), 0.5 + (1 - 0.7)
    0.55
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp
from dmltf.miners.base import pair_masks


@register("generalized_lifted_structure")
class GeneralizedLiftedStructureLoss(PairLoss):
    def __init__(self, pos_margin=0.0, neg_margin=1.0, **kwargs):
        super().__init__(**kwargs)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        ref_w = ops.expand_dims(weights.ref, 0)
        pos_term = log_sum_exp(distance.margin(self.pos_margin, mat), pos, axis=1, weights=ref_w)
        neg_term = log_sum_exp(distance.margin(mat, self.neg_margin), neg, axis=1, weights=ref_w)
        has_both = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        return ops.where(has_both, ops.relu(pos_term + neg_term), 0.0), ops.where(has_both, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}
