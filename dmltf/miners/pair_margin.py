"""Pair-margin miner: positives that are too far and negatives that are too close.

Reference: pytorch-metric-learning ``PairMarginMiner`` (defaults pos_margin=0.2,
neg_margin=0.8, euclidean distance). A positive pair is kept when it is farther than
``pos_margin``, a negative pair when it is closer than ``neg_margin`` ("farther" / "closer"
follow the distance: for similarities, s < pos_margin and s > neg_margin).

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.array([[0.0], [0.1], [0.5], [2.0]], "float32")
    >>> p = miners.get("pair_margin")(np.array([0, 0, 0, 1]), x)
    >>> np.asarray(p.pos)[0].tolist(), np.asarray(p.neg)[2].tolist()
    ([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0])
"""
from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Pairs


@miners.register
class PairMarginMiner(Miner):
    registry_name = "pair_margin"
    default_distance = "euclidean"

    def __init__(self, pos_margin=0.2, neg_margin=0.8, distance=None, **kwargs):
        super().__init__(distance, **kwargs)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def mine(self, mat, pos, neg, distance):
        too_far = distance.margin(self.pos_margin, mat) > 0
        too_close = distance.margin(mat, self.neg_margin) > 0
        kept_pos, kept_neg = ops.logical_and(pos, too_far), ops.logical_and(neg, too_close)
        return Pairs(ops.cast(kept_pos, "float32"), ops.cast(kept_neg, "float32"))

    def get_config(self):
        return {**super().get_config(), "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}
