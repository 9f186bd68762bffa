"""Multi-similarity pair miner.

Reference: Wang et al. 2019, "Multi-Similarity Loss with General Pair Weighting" (official
``MalongTech/research-ms-loss``, ``losses/multi_similarity_loss.py``; pytorch-metric-learning
``MultiSimilarityMiner``). With similarities s, a negative pair (a, n) is kept when
``s_an + epsilon > min_p s_ap`` and a positive pair (a, p) when ``s_ap - epsilon < max_n s_an``
(for distances the inequalities flip). An anchor without positives keeps no negative and
vice versa. Standalone the miner uses cosine similarity, as the reference does.

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], "float32")
    >>> p = miners.get("multi_similarity")(np.array([0, 0, 1, 1]), x)
    >>> np.asarray(p.pos)[0].tolist(), np.asarray(p.neg)[0].tolist()  # s01=.6 < s02=.8 + .1
    ([0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0])
"""
from keras import ops

from dmltf import miners
from dmltf.miners.base import BIG, Miner, Pairs, as_distance


@miners.register
class MultiSimilarityMiner(Miner):
    registry_name = "multi_similarity"
    default_distance = "cosine"

    def __init__(self, epsilon=0.1, distance=None, **kwargs):
        super().__init__(distance, **kwargs)
        self.epsilon = float(epsilon)

    def mine(self, mat, pos, neg, distance):
        d = as_distance(mat, distance)  # smaller is closer
        closest_negative = ops.min(ops.where(neg, d, BIG), axis=1, keepdims=True)
        farthest_positive = ops.max(ops.where(pos, d, -BIG), axis=1, keepdims=True)
        hard_pos = ops.logical_and(pos, d + self.epsilon > closest_negative)
        hard_neg = ops.logical_and(neg, d - self.epsilon < farthest_positive)
        return Pairs(ops.cast(hard_pos, "float32"), ops.cast(hard_neg, "float32"))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
