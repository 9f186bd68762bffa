"""Semi-hard triplet miner with the semantics of TF-contrib's ``triplet_semihard_loss``.

Reference: Schroff et al. 2015 (FaceNet); ``tf.contrib.losses.metric_learning`` (the loss
DVML's reference used). For every positive pair (a, p) the negative is the closest n with
d(a, n) > d(a, p); if there is none, the farthest negative of a. Anchors without negatives
give no triplet.

Memory is O(B * R): each anchor's negative distances are sorted once and every positive
distance is located by ``searchsorted`` row by row (TF-addons tiles a [B^2, B] matrix instead).
"""
from keras import ops

from dmltf import miners
from dmltf.backend import searchsorted_rows
from dmltf.miners.base import BIG, Miner, Triplets, as_distance


@miners.register
class SemiHardMiner(Miner):
    registry_name = "semi_hard"

    def mine(self, mat, pos, neg, distance):
        d = as_distance(mat, distance)
        b, r = ops.shape(d)[0], ops.shape(d)[1]
        neg_d = ops.where(neg, d, BIG)
        order = ops.argsort(neg_d, axis=1)
        sorted_neg = ops.take_along_axis(neg_d, order, axis=1)
        num_neg = ops.sum(ops.cast(neg, "int32"), axis=1, keepdims=True)  # [B, 1]
        # First negative strictly farther than the positive (TF-contrib uses '>').
        first_farther = searchsorted_rows(sorted_neg, d, side="right")
        chosen = ops.where(first_farther < num_neg, first_farther, ops.maximum(num_neg - 1, 0))
        negative = ops.take_along_axis(order, chosen, axis=1)  # [B, R]: negative for (a, p)
        weight = ops.cast(ops.logical_and(pos, num_neg > 0), "float32")
        anchor = ops.repeat(ops.arange(b), r)
        positive = ops.tile(ops.arange(r), [b])
        flat = lambda t: ops.reshape(t, (-1,))
        return Triplets(anchor, positive, ops.cast(flat(negative), "int32"), flat(weight))
