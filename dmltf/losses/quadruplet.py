"""Quadruplet loss, Revisiting-DML form.

Reference: Chen, Chen, Zhang & Huang 2017, "Beyond Triplet Loss: A Deep Quadruplet Network for
Person Re-identification"; Revisiting-DML ``criteria/quadruplet.py`` (both margins 0.2).
For each mined triplet (a, p, n) and a fourth sample l of a class other than a's and n's:
``[d_ap - d_an + triplet_margin]_+`` and ``[d_ap - d_nl + quadruplet_margin]_+``, each
averaged over the triplets and added. d is euclidean; any triplet miner (default semi-hard:
the reference takes whatever ``--batch_mining`` gives).

Deviations: the reference draws one fourth sample at random per triplet; here the second term
is averaged over every valid fourth sample (the expectation of that draw: deterministic and
lower-variance). The reference's fourth sample is any index other than the negative's, even of
a's or n's class; ``fourth_any_other_index=True`` reproduces that choice.
Memory: O(T * R) for T mined triplets (the fourth-sample distances).
Sample weights: a triplet weighs w_a w_p w_n in both terms; the mean over fourth samples l
weighs each by w_l (so the quadruplet (a, p, n, l) weighs w_a w_p w_n w_l within its triplet).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("quadruplet")
    >>> x = np.array([[0.0], [0.1], [0.2], [5.0]], "float32")
    >>> round(float(loss(np.array([0, 0, 1, 2]), x)), 4) > 0
    True
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, reduce, safe_divide
from dmltf.miners.base import gather_pairs


@register("quadruplet")
class QuadrupletLoss(PairLoss):
    default_miner = "semi_hard"
    uses_triplets = True

    def __init__(self, triplet_margin=0.2, quadruplet_margin=0.2, fourth_any_other_index=False, **kwargs):
        super().__init__(**kwargs)
        self.triplet_margin = float(triplet_margin)
        self.quadruplet_margin = float(quadruplet_margin)
        self.fourth_any_other_index = bool(fourth_any_other_index)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat, t = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        ap = gather_pairs(mat, t.anchor, t.positive)
        an = gather_pairs(mat, t.anchor, t.negative)
        triplet = ops.relu(self.triplet_margin - self.distance.margin(ap, an))
        nl = self.distance.pairwise(ops.take(ref_embeddings, t.negative, axis=0), ref_embeddings)  # [T, R]
        fourth = self._fourth_mask(t, labels, ref_labels, ops.shape(ref_labels)[0])
        fourth_w = ops.where(fourth, ops.expand_dims(weights.ref, 0), 0.0)  # [T, R]
        quad = ops.relu(self.quadruplet_margin - self.distance.margin(ops.expand_dims(ap, 1), nl))
        count = ops.sum(fourth_w, axis=1)
        quad_mean = safe_divide(ops.sum(fourth_w * quad, axis=1), count)
        quad_weight = t.weight * ops.cast(count > 0, "float32")
        return reduce(triplet, t.weight, self.reduction) + reduce(quad_mean, quad_weight, self.reduction), None

    def _fourth_mask(self, t, labels, ref_labels, num_refs):
        """[T, R]: which references may be the fourth sample of each triplet."""
        if self.fourth_any_other_index:
            return ops.not_equal(ops.expand_dims(t.negative, 1), ops.expand_dims(ops.arange(num_refs), 0))
        row = lambda v: ops.expand_dims(v, 1)
        other_than_negative = ops.not_equal(row(ops.take(ref_labels, t.negative)), ops.expand_dims(ref_labels, 0))
        other_than_anchor = ops.not_equal(row(ops.take(labels, t.anchor)), ops.expand_dims(ref_labels, 0))
        return ops.logical_and(other_than_negative, other_than_anchor)

    def get_config(self):
        return {**super().get_config(), "triplet_margin": self.triplet_margin,
                "quadruplet_margin": self.quadruplet_margin, "fourth_any_other_index": self.fourth_any_other_index}
