"""Triplet-margin miner: the triplets whose margin is violated (or, "easy", satisfied).

Reference: pytorch-metric-learning 2.9 ``TripletMarginMiner`` (defaults ``margin=0.2``,
``type_of_triplets="all"``). Over every valid triplet (a, p, n) (y_a = y_p != y_n, p != a
without references) the triplet margin is ``m = d(a, n) - d(a, p)`` (``s(a, p) - s(a, n)``
for similarities) and the triplet is kept when

* ``"all"``:      m <= margin
* ``"hard"``:     m <= margin and m <= 0   (the negative is at least as close as the positive)
* ``"semihard"``: m <= margin and m > 0
* ``"easy"``:     m > margin

Returns ``Triplets`` of length B * R * R (weight 1 where kept): memory is O(B * R^2), as for
any all-triplets selection (a batch of a few hundred is fine).
Deviation: PML's default distance L2-normalises the embeddings; here the distance is the
loss's (``euclidean`` standalone, embeddings used as given): pass unit vectors or
``distance="cosine"`` for PML's default geometry.

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.array([[0.0], [1.0], [1.1], [3.0]], "float32")
    >>> t = miners.get("triplet_margin", margin=0.2)(np.array([0, 0, 1, 1]), x)
    >>> w = np.asarray(t.weight) > 0
    >>> sorted(zip(np.asarray(t.anchor)[w].tolist(), np.asarray(t.positive)[w].tolist(),
    ...            np.asarray(t.negative)[w].tolist()))
    [(0, 1, 2), (1, 0, 2), (2, 3, 0), (2, 3, 1), (3, 2, 1)]
"""
from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Triplets

TYPES = ("all", "hard", "semihard", "easy")


def all_triplets(valid):
    """(anchor, positive, negative) index vectors of every cell of a [B, R, R] grid."""
    b, r = ops.shape(valid)[0], ops.shape(valid)[1]
    a_idx, p_idx, n_idx = ops.meshgrid(
        ops.arange(b, dtype="int32"), ops.arange(r, dtype="int32"), ops.arange(r, dtype="int32"), indexing="ij"
    )
    flat = lambda t: ops.reshape(t, (-1,))  # noqa: E731
    return flat(a_idx), flat(p_idx), flat(n_idx)


@miners.register
class TripletMarginMiner(Miner):
    registry_name = "triplet_margin"
    default_distance = "euclidean"

    def __init__(self, margin=0.2, type_of_triplets="all", distance=None, **kwargs):
        super().__init__(distance, **kwargs)
        if type_of_triplets not in TYPES:
            raise ValueError(f"type_of_triplets must be one of {', '.join(TYPES)}, got {type_of_triplets!r}")
        self.margin = float(margin)
        self.type_of_triplets = type_of_triplets

    def mine(self, mat, pos, neg, distance):
        valid = ops.logical_and(ops.expand_dims(pos, 2), ops.expand_dims(neg, 1))  # [B, R(p), R(n)]
        m = distance.margin(ops.expand_dims(mat, 2), ops.expand_dims(mat, 1))  # d_an - d_ap
        if self.type_of_triplets == "easy":
            keep = m > self.margin
        else:
            keep = m <= self.margin
            if self.type_of_triplets == "hard":
                keep = ops.logical_and(keep, m <= 0)
            elif self.type_of_triplets == "semihard":
                keep = ops.logical_and(keep, m > 0)
        weight = ops.cast(ops.reshape(ops.logical_and(valid, keep), (-1,)), "float32")
        return Triplets(*all_triplets(valid), weight)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "type_of_triplets": self.type_of_triplets}
