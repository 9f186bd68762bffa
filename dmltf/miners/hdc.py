"""HDC miner: the hardest fraction of the batch's positive pairs and of its negative pairs.

Reference: Yuan, Yang & Zhang 2017, "Hard-Aware Deeply Cascaded Embedding" (pytorch-metric-
learning 2.9 ``HDCMiner``, default ``filter_percentage=0.5``). Of the P positive pairs of the
whole batch the ``ceil(filter_percentage * P)`` farthest are kept, of the N negative pairs the
``ceil(filter_percentage * N)`` closest (for similarities: the least / most similar). The
fraction is over the batch, not per anchor. Returns ``Pairs``; memory is O(B * R) (a sort of
the [B * R] matrix). Ties at the cut-off go to the lowest flat index (row-major): ``keras.ops.argsort``
is stable on every backend.
Deviations: PML's cascade use (indices set from outside with ``set_idx_externally``) is not
offered: chain a miner's selection by masking instead. PML's default distance L2-normalises the
embeddings; here the distance is the loss's (``euclidean`` standalone).

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.array([[0.0], [1.0], [3.0], [1.5]], "float32")
    >>> p = miners.get("hdc", filter_percentage=0.5)(np.array([0, 0, 0, 1]), x)
    >>> np.argwhere(np.asarray(p.pos)).tolist()  # 3 of the 6 positive pairs: d = 3, 3, 2
    [[0, 2], [1, 2], [2, 0]]
"""
import math

from keras import ops

from dmltf import miners
from dmltf.miners.base import BIG, Miner, Pairs, as_distance


def keep_first(mask, key, fraction):
    """0/1 mask of the ceil(fraction * count) entries of ``mask`` with the smallest ``key``."""
    shape = ops.shape(mask)
    flat_mask = ops.reshape(mask, (-1,))
    flat_key = ops.where(flat_mask, ops.reshape(key, (-1,)), BIG)
    order = ops.argsort(flat_key)  # stable: ties keep the lowest index first
    rank = ops.scatter(ops.expand_dims(order, 1), ops.arange(ops.shape(order)[0], dtype="int32"), ops.shape(order))
    count = ops.sum(ops.cast(flat_mask, "float64"))
    k = ops.cast(ops.ceil(count * fraction), "int32")
    kept = ops.logical_and(flat_mask, rank < k)
    return ops.reshape(ops.cast(kept, "float32"), shape)


@miners.register
class HDCMiner(Miner):
    registry_name = "hdc"
    default_distance = "euclidean"

    def __init__(self, filter_percentage=0.5, distance=None, **kwargs):
        super().__init__(distance, **kwargs)
        if not 0.0 <= float(filter_percentage) <= 1.0 or math.isnan(float(filter_percentage)):
            raise ValueError(f"filter_percentage must be in [0, 1], got {filter_percentage!r}")
        self.filter_percentage = float(filter_percentage)

    def mine(self, mat, pos, neg, distance):
        d = as_distance(mat, distance)
        return Pairs(keep_first(pos, -d, self.filter_percentage), keep_first(neg, d, self.filter_percentage))

    def get_config(self):
        return {**super().get_config(), "filter_percentage": self.filter_percentage}
