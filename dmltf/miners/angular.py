"""Angular miner: the triplets whose angle at the negative exceeds a threshold.

Reference: Wang et al. 2017, "Deep Metric Learning with Angular Loss" (pytorch-metric-learning
2.9 ``AngularMiner``, default ``angle=20`` degrees). Over every valid triplet (a, p, n), with the
centre c = (a + p) / 2, the triplet is kept when ``atan(||a - p|| / (2 ||n - c||)) > angle``.
The geometry is fixed (euclidean, on the embeddings as given: L2-normalise them first, as the
angular loss assumes): the miner takes no ``distance`` and ignores the loss's. (PML asserts a
normalising distance but computes these distances on the raw embeddings, as here.)

Computed from Gram matrices, without gathering [T, D] vectors: ``||n - c||^2 = |n|^2 -
(a.n + p.n) + |a + p|^2 / 4``; the comparison is made as ``||a - p|| > 2 tan(angle) ||n - c||``
(no division). Returns ``Triplets`` of length
B * R * R: memory is O(B * R^2), as for any all-triplets selection.
Deviation: PML's ``pairwise_distance`` adds 1e-6 to each difference (torch's default ``eps``);
here the distances are exact, which only matters within ~1e-6 of the threshold.

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0]], "float32")
    >>> t = miners.get("angular", angle=20)(np.array([0, 0, 1, 2]), x)
    >>> w = np.asarray(t.weight) > 0  # n = 2: 45 degrees at the negative; n = 3: 18.4
    >>> sorted(zip(np.asarray(t.anchor)[w].tolist(), np.asarray(t.positive)[w].tolist(),
    ...            np.asarray(t.negative)[w].tolist()))
    [(0, 1, 2), (1, 0, 2)]
"""
import math

from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Triplets
from dmltf.miners.triplet_margin import all_triplets


@miners.register
class AngularMiner(Miner):
    registry_name = "angular"

    def __init__(self, angle=20.0, **kwargs):
        if kwargs.pop("distance", None) is not None:
            raise ValueError("the angular miner has a fixed geometry (euclidean on the embeddings): "
                             "it takes no distance")
        super().__init__(None, **kwargs)
        if not 0.0 < float(angle) < 90.0:
            raise ValueError(f"angle must be in (0, 90) degrees, got {angle!r}")
        self.angle = float(angle)

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None):
        from dmltf.losses.base import prepare_inputs
        from dmltf.miners.base import label_masks

        labels, embeddings, ref_labels, ref_embeddings, same_source = prepare_inputs(
            labels, embeddings, ref_labels, ref_embeddings
        )
        pos, neg = label_masks(labels, ref_labels, same_source)
        return self.mine_embeddings(embeddings, ref_embeddings, pos, neg)

    def mine_for_loss(self, mat, pos, neg, distance, embeddings, ref_embeddings):
        return self.mine_embeddings(ops.stop_gradient(embeddings), ops.stop_gradient(ref_embeddings), pos, neg)

    def mine_embeddings(self, embeddings, ref_embeddings, pos, neg):
        """Triplets of the queries [B, D] and references [R, D] with the label masks [B, R]."""
        qr = ops.matmul(embeddings, ops.transpose(ref_embeddings))  # a.p, a.n  [B, R]
        rr = ops.matmul(ref_embeddings, ops.transpose(ref_embeddings))  # p.n  [R, R]
        q2 = ops.expand_dims(ops.sum(ops.square(embeddings), axis=1), 1)  # |a|^2  [B, 1]
        r2 = ops.sum(ops.square(ref_embeddings), axis=1)  # |p|^2, |n|^2  [R]
        ap2 = q2 + ops.expand_dims(r2, 0) - 2.0 * qr  # ||a - p||^2  [B, R]
        # ||n - c||^2 = |n|^2 - (a.n + p.n) + |a + p|^2 / 4  [B, R(p), R(n)]
        nc2 = (
            ops.reshape(r2, (1, 1, -1))
            - (ops.expand_dims(qr, 1) + ops.expand_dims(rr, 0))
            + ops.expand_dims(0.25 * (ap2 + 4.0 * qr), 2)
        )
        ap = ops.sqrt(ops.maximum(ap2, 0.0))
        nc = ops.sqrt(ops.maximum(nc2, 0.0))
        keep = ops.expand_dims(ap, 2) > 2.0 * math.tan(math.radians(self.angle)) * nc
        valid = ops.logical_and(ops.expand_dims(pos, 2), ops.expand_dims(neg, 1))
        weight = ops.cast(ops.reshape(ops.logical_and(valid, keep), (-1,)), "float32")
        return Triplets(*all_triplets(valid), weight)

    def get_config(self):
        return {"angle": self.angle}
