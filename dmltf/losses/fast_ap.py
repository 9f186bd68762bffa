"""FastAP: average precision optimised through a histogram of distances.

Reference: Cakir, He, Xia, Kulis & Sclaroff 2019, "Deep Metric Learning to Rank" (CVPR;
official ``kunhe/FastAP-metric-learning``); parameters and reduction as pytorch-metric-learning
2.9 ``FastAPLoss``. Embeddings are L2-normalised and d = |x^ - y^|^2 lies in [0, 4]; each
distance is spread over the ``num_bins + 1`` bin centres c_k = 4k / num_bins by the triangular
kernel ``[1 - |d - c_k| / delta]_+`` (delta = 4 / num_bins). For query i with positive and
negative histograms h+_k, h-_k and their cumulative sums H+_k, H_k = H+_k + H-_k:

    FastAP_i = (1 / N+_i) sum_k h+_k H+_k / H_k        loss_i = 1 - FastAP_i

(bins with h+_k H+_k = 0 add 0); the default reduction is the mean over the queries with a
positive, and a batch without a positive pair gives 0. Defaults: num_bins 10 (PML's and the
official code's). Memory: O(B R num_bins). The distance is part of the definition (the
histogram's support): the loss takes no ``distance``; it takes no miner either.

Sample weights: query i's term weighs w_i; each sample adds its weight w_j to the histograms
(and to N+_i). With references (PML refuses them) the queries' histograms are over the
references; without, over the other samples of the batch.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [-1.0, 0.1]], "float32")
    >>> round(float(get("fast_ap")(np.array([0, 0, 1, 1]), x)), 4)  # each positive ranked first
    0.0
"""
from keras import ops

from dmltf.distances import SquaredEuclidean, l2_normalize
from dmltf.losses import register
from dmltf.losses.base import MetricLoss, safe_divide

_MAX_DISTANCE = 4.0  # squared euclidean distance of unit vectors


@register("fast_ap")
class FastAPLoss(MetricLoss):
    def __init__(self, num_bins=10, **kwargs):
        super().__init__(**kwargs)
        self.num_bins = int(num_bins)
        if self.num_bins < 1:
            raise ValueError(f"fast_ap: num_bins must be >= 1, got {num_bins}")

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat = SquaredEuclidean().pairwise(l2_normalize(embeddings), l2_normalize(ref_embeddings))
        pos, neg = weights.label_masks(labels, ref_labels, same_source)
        delta = _MAX_DISTANCE / self.num_bins
        centres = ops.linspace(0.0, _MAX_DISTANCE, self.num_bins + 1)
        pulse = ops.relu(1.0 - ops.abs(ops.expand_dims(mat, 2) - centres) / delta)  # [B, R, bins]
        ref_w = ops.expand_dims(weights.ref, 0)
        histogram = lambda mask: ops.sum(pulse * ops.expand_dims(ops.where(mask, ref_w, 0.0), 2), axis=1)  # noqa: E731
        pos_hist, neg_hist = histogram(pos), histogram(neg)
        product = pos_hist * ops.cumsum(pos_hist, axis=1)
        total = ops.cumsum(pos_hist + neg_hist, axis=1)
        safe = ops.logical_and(product > 0, total > 0)
        fast_ap = ops.sum(ops.where(safe, product / ops.where(safe, total, 1.0), 0.0), axis=1)
        num_pos = ops.sum(ops.where(pos, ref_w, 0.0), axis=1)
        has_pos = num_pos > 0
        return ops.where(has_pos, 1.0 - safe_divide(fast_ap, num_pos), 0.0), ops.where(has_pos, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}
