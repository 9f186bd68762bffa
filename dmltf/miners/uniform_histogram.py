"""Uniform-histogram miner: pairs drawn evenly across the range of the batch's distances.

Reference: pytorch-metric-learning 2.9 ``UniformHistogramMiner`` (defaults ``num_bins=100``,
``pos_per_bin=10``, ``neg_per_bin=10``). Positive and negative pairs are binned separately:
``num_bins`` equal-width bins from the smallest to the largest matrix value (distance or
similarity) of that kind of pair, bin i holding ``edge_i <= v < edge_i+1`` (the last bin also
its upper edge). From every non-empty bin ``pos_per_bin`` (``neg_per_bin``) pairs are drawn
uniformly with replacement. Returns ``Pairs``; memory is O(B * R + num_bins * per_bin).

Draws use ``keras.random.uniform`` with a ``SeedGenerator(seed)``: the same seed gives the
same draws; the generator's state is checkpointed with the loss that holds the miner (see
``distance_weighted``), so a resumed run continues the draws.
Deviations: dmltf's ``Pairs`` are 0/1 masks, so a pair drawn more than once in a step is used
once (PML's index lists repeat it: a pair loss counts it as often as drawn). PML's default
distance L2-normalises the embeddings; here the distance is the loss's (``euclidean``
standalone).

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    >>> p = miners.get("uniform_histogram", num_bins=4, pos_per_bin=1, neg_per_bin=1, seed=0)(np.arange(8) % 2, x)
    >>> 1 <= int(np.asarray(p.neg).sum()) <= 4  # at most one pair from each of the 4 bins
    True
"""
import keras
from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Pairs


def bin_of(values, mask, num_bins):
    """Bin index in [0, num_bins) of each masked value (PML's edges), num_bins where unmasked."""
    big = 1.0e30  # finite: hi - lo must not overflow when nothing is masked in
    lo = ops.min(ops.where(mask, values, big))
    hi = ops.max(ops.where(mask, values, -big))
    edges = ops.linspace(lo, hi, num_bins + 1)
    idx = ops.cast(ops.searchsorted(edges, values, side="right"), "int32") - 1
    idx = ops.clip(idx, 0, num_bins - 1)  # the last bin includes its upper edge
    return ops.where(mask, idx, num_bins)


def draw_per_bin(values, mask, num_bins, per_bin, seed_generator):
    """0/1 mask (flat) of ``per_bin`` uniform draws with replacement from each non-empty bin."""
    n = ops.shape(values)[0]
    bins = bin_of(values, mask, num_bins)
    order = ops.argsort(bins)  # the flat indices grouped by bin (stable: in index order)
    counts = ops.cast(ops.bincount(bins, minlength=num_bins + 1)[:num_bins], "int32")
    starts = ops.cumsum(counts) - counts
    u = keras.random.uniform((num_bins, per_bin), seed=seed_generator)
    offset = ops.minimum(ops.cast(ops.floor(u * ops.cast(ops.expand_dims(counts, 1), "float32")), "int32"),
                         ops.maximum(ops.expand_dims(counts, 1) - 1, 0))
    drawn = ops.take(order, ops.reshape(ops.expand_dims(starts, 1) + offset, (-1,)))  # [num_bins * per_bin]
    live = ops.reshape(ops.repeat(ops.expand_dims(ops.cast(counts > 0, "float32"), 1), per_bin, axis=1), (-1,))
    hits = ops.scatter(ops.expand_dims(drawn, 1), live, (n,))
    return ops.minimum(hits, 1.0)


@miners.register
class UniformHistogramMiner(Miner):
    registry_name = "uniform_histogram"
    default_distance = "euclidean"

    def __init__(self, num_bins=100, pos_per_bin=10, neg_per_bin=10, seed=None, distance=None, **kwargs):
        super().__init__(distance, **kwargs)
        for name, value in (("num_bins", num_bins), ("pos_per_bin", pos_per_bin), ("neg_per_bin", neg_per_bin)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.num_bins, self.pos_per_bin, self.neg_per_bin = int(num_bins), int(pos_per_bin), int(neg_per_bin)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def mine(self, mat, pos, neg, distance):
        flat = ops.reshape(mat, (-1,))
        shape = ops.shape(mat)
        pos_drawn = draw_per_bin(flat, ops.reshape(pos, (-1,)), self.num_bins, self.pos_per_bin, self.seed_generator)
        neg_drawn = draw_per_bin(flat, ops.reshape(neg, (-1,)), self.num_bins, self.neg_per_bin, self.seed_generator)
        return Pairs(ops.reshape(pos_drawn, shape), ops.reshape(neg_drawn, shape))

    def get_config(self):
        return {
            **super().get_config(),
            "num_bins": self.num_bins,
            "pos_per_bin": self.pos_per_bin,
            "neg_per_bin": self.neg_per_bin,
            "seed": self.seed,
        }
