"""Triplets already packed in the batch: samples 3t, 3t + 1, 3t + 2 are (anchor, positive, negative).

Reference: PaddlePaddle/models ``PaddleCV/metric_learning/losses/tripletloss.py``: the batch
(from its triplet reader, dmltf's ``paddle_triplet`` sampler) is reshaped to [B/3, 3, D] and
each row's three features are the triplet; pytorch-metric-learning takes the same form as
``indices_tuple``. A triple whose labels are not a positive and a negative pair of its anchor
(or whose samples have weight 0) gets weight 0, so a batch that is not packed trains on
nothing wrong. The triples index the batch itself: references must be the batch (not
separate ``ref_embeddings``), and a batch whose size is not a multiple of 3 is refused.
Memory O(B).

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.zeros((6, 2), "float32")
    >>> t = miners.get("packed_triplets")(np.array([0, 0, 1, 2, 2, 2]), x)
    >>> np.asarray(t.anchor).tolist(), np.asarray(t.negative).tolist(), np.asarray(t.weight).tolist()
    ([0, 3], [2, 5], [1.0, 0.0])
"""
from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Triplets


@miners.register
class PackedTripletsMiner(Miner):
    registry_name = "packed_triplets"

    def mine(self, mat, pos, neg, distance):
        batch, refs = mat.shape[0], mat.shape[1]
        if batch is not None and refs is not None and batch != refs:
            raise ValueError(f"packed_triplets indexes the batch itself: {batch} queries against {refs} separate "
                             f"references")
        if batch is not None and batch % 3:
            raise ValueError(f"packed_triplets needs a batch of whole (anchor, positive, negative) triples, got "
                             f"{batch} samples (not a multiple of 3)")
        anchor = 3 * ops.arange(ops.shape(mat)[0] // 3, dtype="int32")
        positive, negative = anchor + 1, anchor + 2
        rows = ops.take(pos, anchor, axis=0), ops.take(neg, anchor, axis=0)
        valid = ops.logical_and(ops.take_along_axis(rows[0], positive[:, None], axis=1)[:, 0],
                                ops.take_along_axis(rows[1], negative[:, None], axis=1)[:, 0])
        return Triplets(anchor, positive, negative, ops.cast(valid, "float32"))
