"""Batch-hard triplet miner: each anchor's farthest positive and closest negative.

Reference: Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss for Person
Re-Identification" (pytorch-metric-learning ``BatchHardMiner``). One triplet per anchor;
an anchor without a positive or without a negative gives a triplet of weight 0. Memory is
O(B * R): two masked arg-reductions over the [B, R] matrix. Ties go to the lowest index.

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.array([[0.0], [1.0], [3.0], [1.5]], "float32")
    >>> t = miners.get("batch_hard")(np.array([0, 0, 0, 1]), x)
    >>> np.asarray(t.positive).tolist(), np.asarray(t.negative).tolist()
    ([2, 2, 0, 0], [3, 3, 3, 1])
"""
from keras import ops

from dmltf import miners
from dmltf.miners.base import BIG, Miner, Triplets, as_distance


@miners.register
class BatchHardMiner(Miner):
    registry_name = "batch_hard"

    def mine(self, mat, pos, neg, distance):
        d = as_distance(mat, distance)
        hardest_positive = ops.argmax(ops.where(pos, d, -BIG), axis=1)
        hardest_negative = ops.argmin(ops.where(neg, d, BIG), axis=1)
        weight = ops.cast(ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1)), "float32")
        anchor = ops.arange(ops.shape(d)[0], dtype="int32")
        return Triplets(anchor, ops.cast(hardest_positive, "int32"), ops.cast(hardest_negative, "int32"), weight)
