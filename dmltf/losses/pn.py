"""PN loss (Ivis): a triplet whose negative distance is the closer of d(a, n) and d(p, n).

Reference: Szubert, Cole, Monaco & Drozdov 2019, "Structure-preserving visualisation of high
dimensional single-cell datasets" (Sci Rep 9, 8914; Ivis); parameters, mining and reduction as
TensorFlow Similarity 0.17 ``PNLoss``. With d the distance (for a similarity s, -s), per anchor a
with a mined positive p and a mined negative n:

    d_neg = min(d(a, n), d(p, n))
    l_a = log(1 + exp(d(a, p) - d_neg + margin))     soft=True (the default; margin 0)
    l_a = max(0, d(a, p) - d_neg + margin)            soft=False

Mining, as TFSim's ``positive_distances`` / ``negative_distances``: ``positive_mining`` "hard"
takes the farthest positive, "easy" the closest; ``negative_mining`` "hard" the closest
negative, "easy" the farthest, "semi-hard" the closest negative farther than the anchor's
farthest positive (whatever the positive strategy), or the farthest negative if none is
farther. The candidates are the miner's pairs (the default miner "all": every positive and
negative pair, TFSim's masks). The default reduction is the mean over all anchors (Keras' mean
over the batch in TFSim). Defaults: cosine distance, "hard" positives, "semi-hard" negatives and
the soft margin (TFSim's). TFSim's ``margin=None`` is ``soft=True, margin=0`` here and its
``margin=m`` is ``soft=False, margin=m`` (the ``triplet`` loss's parameters, and both are
flags); a soft margin with a non-zero margin is dmltf's extension. TFSim's ``"cosine"`` is
1 - s on unit vectors: dmltf's ``distance="cosine"`` (the similarity s of the normalised inputs)
gives the same loss, the constant cancelling.

Sample weights: anchor a's term weighs w_a and its triplet's loss is scaled by w_p w_n (so the
mean divides by the summed w_a). With references (TFSim compares the batch with itself) the
positives and negatives are references and d(p, n) is their distance.

Deviations: an anchor without a positive or a negative candidate adds 0 to the mean (and gets
no gradient); TFSim's masked max / min fall back on a bogus pair there (the row's minimum minus
1e-6 as the positive distance, column 0 as its index), so on a batch with singletons its loss
has spurious terms, and on one-class or all-distinct batches, where dmltf gives exactly 0 with
a zero gradient, TFSim gives non-zero values (never NaN; 0 only where its relu clips them).
Ties between equal distances go to the first index (TFSim's argmin / argmax do too; its
reduce_min's gradient is split among them).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[0.0], [0.1], [3.0], [3.2]], "float32")
    >>> loss = get("pn", distance="euclidean", margin=0.5, soft=False)
    >>> round(float(loss(np.array([0, 0, 1, 1]), x)), 4)  # each positive closer by > 0.5
    0.0
    >>> # soft margin: d_neg is 2.9 for every anchor (anchor 3's min(d(3, 1), d(2, 1)) = d(2, 1))
    >>> round(float(get("pn", distance="euclidean")(np.array([0, 0, 1, 1]), x)), 4)  # softplus(-2.8 | -2.7)
    0.062
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss
from dmltf.miners.base import BIG, as_distance, gather_pairs, pair_masks

POSITIVE_MINING = ("hard", "easy")
NEGATIVE_MINING = ("hard", "semi-hard", "easy")


def _closest(d, mask):
    """Index of the smallest masked entry per row (0 where the row's mask is empty)."""
    return ops.cast(ops.argmin(ops.where(mask, d, BIG), axis=1), "int32")


def _farthest(d, mask):
    """Index of the largest masked entry per row (0 where the row's mask is empty)."""
    return ops.cast(ops.argmax(ops.where(mask, d, -BIG), axis=1), "int32")


@register("pn")
class PNLoss(PairLoss):
    default_distance = "cosine"

    def __init__(self, positive_mining="hard", negative_mining="semi-hard", margin=0.0, soft=True, **kwargs):
        super().__init__(**kwargs)
        if positive_mining not in POSITIVE_MINING:
            raise ValueError(f"pn: positive_mining must be one of {POSITIVE_MINING}, got {positive_mining!r}")
        if negative_mining not in NEGATIVE_MINING:
            raise ValueError(f"pn: negative_mining must be one of {NEGATIVE_MINING}, got {negative_mining!r}")
        self.positive_mining = positive_mining
        self.negative_mining = negative_mining
        self.margin = float(margin)
        self.soft = bool(soft)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        pos, neg = pair_masks(mined, mat)
        d = as_distance(mat, self.distance)
        chosen = ops.stop_gradient(d)
        positive = (_farthest if self.positive_mining == "hard" else _closest)(chosen, pos)
        if self.negative_mining == "hard":
            negative = _closest(chosen, neg)
        elif self.negative_mining == "easy":
            negative = _farthest(chosen, neg)
        else:
            max_pos = ops.max(ops.where(pos, chosen, -BIG), axis=1, keepdims=True)
            farther = ops.logical_and(neg, chosen > max_pos)
            negative = ops.where(ops.any(farther, axis=1), _closest(chosen, farther), _farthest(chosen, neg))
        rows = ops.arange(ops.shape(d)[0])
        ap = gather_pairs(d, rows, positive)
        an = gather_pairs(d, rows, negative)
        if same_source:
            pn = gather_pairs(d, positive, negative)
        else:
            pn = as_distance(ops.diagonal(self.distance.pairwise(
                ops.take(ref_embeddings, positive, axis=0), ops.take(ref_embeddings, negative, axis=0))), self.distance)
        violation = ap - ops.minimum(an, pn) + self.margin
        losses = ops.softplus(violation) if self.soft else ops.relu(violation)
        valid = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        scale = ops.take(weights.ref, positive) * ops.take(weights.ref, negative)
        return ops.where(valid, losses * scale, 0.0), weights.query

    def get_config(self):
        return {**super().get_config(), "positive_mining": self.positive_mining,
                "negative_mining": self.negative_mining, "margin": self.margin, "soft": self.soft}
