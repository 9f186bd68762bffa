"""Distance-weighted negative sampling.

Reference: Wu, Manmatha, Smola & Krähenbühl 2017, "Sampling Matters in Deep Embedding
Learning" (authors' MXNet code ``chaoyuaw/incubator-mxnet``,
``example/gluon/embedding_learning/model.py: DistanceWeightedSampling``). For every positive
pair (a, p) one negative is drawn with probability proportional to
``q(d)^-1 = d^(2-n) (1 - d^2/4)^(-(n-3)/2)`` over a's negatives, n the embedding dimension,
d the euclidean distance clipped below at ``cutoff``; negatives at ``d >= nonzero_loss_cutoff``
(where the margin loss is 0) get weight 0. The formula assumes L2-normalised embeddings.
Returns ``Triplets`` of length B * R (weight 0 where (a, p) is not a positive pair).

Sampling uses ``keras.random.categorical`` with a ``SeedGenerator(seed)``: the same seed
gives the same draws. The generator's state is checkpointed with the loss that holds the miner,
so a resumed run continues the draws; under a ``MirroredStrategy`` (miner built in its scope)
each replica advances its own copy of the state, so the replicas draw what one device draws.
Distances are converted to euclidean from ``squared_euclidean`` (square root) or from a
cosine / dot similarity (``sqrt(2 - 2 s)``, unit vectors).
Deviation: when every negative of an anchor is beyond ``nonzero_loss_cutoff`` the reference
draws uniformly over the whole batch (positives and the anchor included); here uniformly
over the anchor's negatives.

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.eye(4, dtype="float32")
    >>> t = miners.get("distance_weighted", seed=1)(np.array([0, 0, 1, 1]), x)
    >>> int(np.asarray(t.weight).sum())  # one triplet per positive pair
    4
"""
import keras
from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Triplets

# Distances are clipped just below 2 (antipodal unit vectors) so log(1 - d^2/4) stays finite.
_MAX_UNIT_DISTANCE = 2.0 - 1e-3


@miners.register
class DistanceWeightedMiner(Miner):
    registry_name = "distance_weighted"
    default_distance = "euclidean"

    def __init__(self, cutoff=0.5, nonzero_loss_cutoff=1.4, seed=None, distance=None, **kwargs):
        super().__init__(distance, **kwargs)
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def select(self, mat, pos, neg, distance, embeddings):
        return self.mine(mat, pos, neg, distance, embedding_dim=embeddings.shape[-1])

    def mine(self, mat, pos, neg, distance, embedding_dim):
        """``embedding_dim`` is n in q(d); it must be static."""
        dist = _euclidean(mat, distance)
        n = float(embedding_dim)
        d = ops.clip(dist, self.cutoff, _MAX_UNIT_DISTANCE)
        log_weight = (2.0 - n) * ops.log(d) - 0.5 * (n - 3.0) * ops.log(1.0 - 0.25 * ops.square(d))
        in_range = ops.logical_and(neg, dist < self.nonzero_loss_cutoff)
        has_in_range = ops.any(in_range, axis=1, keepdims=True)
        row_max = ops.max(ops.where(in_range, log_weight, -1e30), axis=1, keepdims=True)
        logits = ops.where(
            has_in_range,
            ops.where(in_range, log_weight - row_max, -1e9),
            ops.where(neg, 0.0, -1e9),  # fallback: uniform over the negatives
        )
        b, r = ops.shape(mat)[0], ops.shape(mat)[1]
        negative = keras.random.categorical(logits, r, dtype="int32", seed=self.seed_generator)  # [B, R]
        weight = ops.logical_and(pos, ops.any(neg, axis=1, keepdims=True))
        flat = lambda t: ops.reshape(t, (-1,))
        anchor = ops.repeat(ops.arange(b, dtype="int32"), r)
        positive = ops.tile(ops.arange(r, dtype="int32"), [b])
        return Triplets(anchor, positive, flat(negative), ops.cast(flat(weight), "float32"))

    def get_config(self):
        return {
            **super().get_config(),
            "cutoff": self.cutoff,
            "nonzero_loss_cutoff": self.nonzero_loss_cutoff,
            "seed": self.seed,
        }


def _euclidean(mat, distance):
    if distance.name == "squared_euclidean":
        return ops.sqrt(ops.maximum(mat, 0.0))
    if distance.is_inverted:
        return ops.sqrt(ops.maximum(2.0 - 2.0 * mat, 0.0))
    return mat
