"""Histogram loss.

Reference: Ustinova & Lempitsky 2016, "Learning Deep Embeddings with Histogram Loss" (authors'
code ``madkn/HistogramLoss``; PyTorch port ``valerystrizh/pytorch-histogram-loss``). The
similarities of positive and of negative pairs are spread over ``num_steps`` nodes
``t_r = -1 + r * delta``, ``delta = 2 / (num_steps - 1)``, by linear interpolation between
the two nearest nodes (weight ``[1 - |s - t_r| / delta]_+``), giving histograms h+ and h-;
the loss is ``sum_r h-_r * cumsum(h+)_r``, the probability that a random negative pair is
more similar than a random positive one. Cosine similarity by default (the paper's
L2-normalised inner products). A batch without positive or negative pairs gives 0.
Each unordered pair appears twice among the ordered pairs used here, which leaves the
normalised histograms unchanged. Sample weights: a pair (i, j) adds w_i w_j to its histogram
(each histogram is normalised by its summed pair weights).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("histogram", num_steps=3)
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], "float32")
    >>> float(loss(np.array([0, 0, 1]), x))  # positives at +1, negatives at -1: no overlap
    0.0
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, safe_divide
from dmltf.miners.base import pair_masks


@register("histogram")
class HistogramLoss(PairLoss):
    default_distance = "cosine"
    requires_similarity = True

    def __init__(self, num_steps=100, **kwargs):
        super().__init__(**kwargs)
        if int(num_steps) < 2:
            raise ValueError(f"histogram loss: num_steps must be >= 2, got {num_steps}")
        self.num_steps = int(num_steps)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        pair_w = weights.pairs()
        delta = 2.0 / (self.num_steps - 1)
        nodes = ops.linspace(-1.0, 1.0, self.num_steps)
        spread = ops.relu(1.0 - ops.abs(ops.reshape(mat, (-1, 1)) - nodes) / delta)  # [B * R, num_steps]

        def histogram(mask):
            w = ops.reshape(ops.where(mask, pair_w, 0.0), (-1, 1))
            return safe_divide(ops.sum(spread * w, axis=0), ops.sum(w))

        loss = ops.sum(histogram(neg) * ops.cumsum(histogram(pos)))
        valid = ops.logical_and(ops.any(pos), ops.any(neg))
        return ops.where(valid, loss, 0.0), None

    def get_config(self):
        return {**super().get_config(), "num_steps": self.num_steps}
