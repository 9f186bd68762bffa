"""Batch easy/hard miner: per anchor one positive and one negative, each chosen by a strategy.

Reference: Xuan, Stylianou, Liu & Pless 2020, "Improved Embeddings with Easy Positive Triplet
Mining" (pytorch-metric-learning 2.9 ``BatchEasyHardMiner``, defaults ``pos_strategy="easy"``,
``neg_strategy="semihard"``, no allowed ranges). With d "smaller is closer":

=============  ==========================================  ===========================================
strategy       positive of anchor a                        negative of anchor a
=============  ==========================================  ===========================================
``easy``       closest positive                            farthest negative
``hard``       farthest positive                           closest negative
``semihard``   farthest positive with d < d(a, n_chosen)   closest negative with d > d(a, p_chosen)
``all``        every positive pair                         every negative pair
=============  ==========================================  ===========================================

``allowed_pos_range`` / ``allowed_neg_range`` (``(low, high)`` on the raw matrix value,
distance or similarity; empty: no range) drop candidates outside ``[low, high]`` first. Both
``semihard``, or ``semihard`` with ``all``, are refused (as in PML).

Without ``all`` the result is ``Triplets`` with one triplet per anchor (weight 0 where the
anchor lacks a chosen positive or negative), what PML returns as the pairs (a, p), (a, n) of
the anchors that have both. With one ``all`` side the result is ``Pairs``: every positive
(negative) pair and the chosen pair of each anchor that has one on the other side, as in PML.
Ties go to the lowest index. Memory is O(B * R).
Deviation: PML's default distance L2-normalises the embeddings; here the distance is the
loss's (``euclidean`` standalone).

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.array([[0.0], [1.0], [3.0], [1.5], [5.0]], "float32")
    >>> t = miners.get("batch_easy_hard")(np.array([0, 0, 0, 1, 1]), x)  # anchors 2, 3: no negative beyond
    >>> np.asarray(t.positive).tolist(), np.asarray(t.negative).tolist(), np.asarray(t.weight).tolist()
    ([1, 0, 1, 4, 3], [3, 4, 0, 0, 1], [1.0, 1.0, 0.0, 0.0, 1.0])
"""
from keras import ops

from dmltf import miners
from dmltf.miners.base import BIG, Miner, Pairs, Triplets, as_distance

STRATEGIES = ("hard", "semihard", "easy", "all")


def _range(value, name):
    value = [float(v) for v in (value or ())]  # flags give strings; a list, as JSON gives it back
    if value and len(value) != 2:
        raise ValueError(f"{name} must be empty or (low, high), got {value!r}")
    return value


@miners.register
class BatchEasyHardMiner(Miner):
    registry_name = "batch_easy_hard"
    default_distance = "euclidean"

    def __init__(self, pos_strategy="easy", neg_strategy="semihard", allowed_pos_range=(), allowed_neg_range=(),
                 distance=None, **kwargs):
        for name, value in (("pos_strategy", pos_strategy), ("neg_strategy", neg_strategy)):
            if value not in STRATEGIES:
                raise ValueError(f"{name} must be one of {', '.join(STRATEGIES)}, got {value!r}")
        if pos_strategy == neg_strategy == "semihard":
            raise ValueError('pos_strategy and neg_strategy cannot both be "semihard"')
        if {pos_strategy, neg_strategy} == {"all", "semihard"}:
            raise ValueError('"semihard" cannot be used in combination with "all"')
        super().__init__(distance, **kwargs)
        self.pos_strategy, self.neg_strategy = pos_strategy, neg_strategy
        self.allowed_pos_range = _range(allowed_pos_range, "allowed_pos_range")
        self.allowed_neg_range = _range(allowed_neg_range, "allowed_neg_range")

    def mine(self, mat, pos, neg, distance):
        d = as_distance(mat, distance)

        def allowed(mask, value_range):
            if value_range:
                mask = ops.logical_and(mask, ops.logical_and(mat >= value_range[0], mat <= value_range[1]))
            return mask

        pos = allowed(pos, self.allowed_pos_range)
        neg = allowed(neg, self.allowed_neg_range)

        def pick(mask, farthest, threshold=None):
            """(index, distance, found) per row: arg-max (farthest) or arg-min of d over mask."""
            if threshold is not None:
                beyond = d < threshold if farthest else d > threshold
                mask = ops.logical_and(mask, beyond)
            found = ops.any(mask, axis=1)
            if farthest:
                masked = ops.where(mask, d, -BIG)
                idx = ops.argmax(masked, axis=1)
            else:
                masked = ops.where(mask, d, BIG)
                idx = ops.argmin(masked, axis=1)
            idx = ops.cast(idx, "int32")
            return idx, ops.expand_dims(ops.take_along_axis(masked, ops.expand_dims(idx, 1), axis=1)[:, 0], 1), found

        pos_farthest = self.pos_strategy in ("hard", "semihard")
        neg_farthest = self.neg_strategy == "easy"
        p = n = None
        if self.pos_strategy == "semihard":
            n = pick(neg, neg_farthest)
            p = pick(pos, pos_farthest, threshold=n[1])
        elif self.neg_strategy == "semihard":
            p = pick(pos, pos_farthest)
            n = pick(neg, neg_farthest, threshold=p[1])
        else:
            if self.pos_strategy != "all":
                p = pick(pos, pos_farthest)
            if self.neg_strategy != "all":
                n = pick(neg, neg_farthest)
        if p is not None and n is not None:
            weight = ops.cast(ops.logical_and(p[2], n[2]), "float32")
            return Triplets(ops.arange(ops.shape(d)[0], dtype="int32"), p[0], n[0], weight)
        r = ops.shape(d)[1]

        def chosen(pick_result):
            idx, _, found = pick_result
            return ops.one_hot(idx, r, dtype="float32") * ops.expand_dims(ops.cast(found, "float32"), 1)

        pos_mask = ops.cast(pos, "float32") if p is None else chosen(p)
        neg_mask = ops.cast(neg, "float32") if n is None else chosen(n)
        return Pairs(pos_mask, neg_mask)

    def get_config(self):
        return {
            **super().get_config(),
            "pos_strategy": self.pos_strategy,
            "neg_strategy": self.neg_strategy,
            "allowed_pos_range": self.allowed_pos_range,
            "allowed_neg_range": self.allowed_neg_range,
        }
