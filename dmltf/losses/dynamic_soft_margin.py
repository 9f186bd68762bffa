"""Dynamic soft margin loss: triplet differences weighted by their running CDF.

Reference: Zhang & Rusinkiewicz 2019, "Learning Local Descriptors with a CDF-Based Dynamic Soft
Margin" (ICCV); parameters and reduction as pytorch-metric-learning 2.9 ``DynamicSoftMarginLoss``
(its labelled form). Embeddings are L2-normalised and d is the euclidean distance (so
t = d_ap - d_an lies in [-2, 2]); every triplet (a, p, n) of the batch gives t. A histogram h of
``num_bins`` bins of width delta = 2 |min_val| / num_bins starting at ``min_val`` is kept
across calls: each call spreads the batch's t linearly over the two nearest bins (mass 1 - f to
bin floor((t - min_val) / delta), f to the next, f the fractional part), mixes it in as
``h <- ((1 - momentum) h + momentum sum) / total`` (momentum 1 while h is empty) and then

    loss = mean over the triplets of CDF_h(bin(t)) * t

the CDF of the updated histogram at t's bin, a weight that grows with how hard the triplet is
among all triplets seen. Defaults: min_val -2, num_bins 10, momentum 0.01; no distance, no miner
(the histogram's support is that of unit vectors; all triplets, PML's ``t_per_anchor="all"``).
Memory O(B R^2). A batch without a triplet gives 0 and leaves the histogram as it is (PML too).

Sample weights: a triplet weighs w_a w_p w_n, in the mean and in the histogram's update.
The histogram is a non-trainable weight (``histogram``; saved and restored with the loss; under
a distribution strategy the first replica's update is kept).

Deviations: the CDF weights are constants (no gradient); PML updates its histogram from the
loss values with their autograd graph, which sends a gradient through the histogram's bin
fractions (the paper treats the CDF as a statistic). PML fails (``index 10 is out of bounds``)
on a t in the last bin (t >= |min_val| - delta) or below ``min_val``; here that mass goes to the
last / first bin.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("dynamic_soft_margin")
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [-0.9, 0.1]], "float32")
    >>> float(loss(np.array([0, 0, 1, 1]), x)) < 0  # every positive closer than every negative
    True
    >>> round(float(np.sum(loss.histogram)), 4)
    1.0
"""
from keras import ops

from dmltf.distances import Euclidean, l2_normalize
from dmltf.losses import register
from dmltf.losses.base import MetricLoss


@register("dynamic_soft_margin")
class DynamicSoftMarginLoss(MetricLoss):
    def __init__(self, min_val=-2.0, num_bins=10, momentum=0.01, **kwargs):
        super().__init__(**kwargs)
        self.min_val = float(min_val)
        self.num_bins = int(num_bins)
        self.momentum = float(momentum)
        if self.num_bins < 1 or self.min_val == 0.0:
            raise ValueError(f"dynamic_soft_margin: need num_bins >= 1 and min_val != 0, got {num_bins}, {min_val}")
        self.delta = 2.0 * abs(self.min_val) / self.num_bins
        self.histogram = self.add_weight(name="histogram", shape=(self.num_bins,), initializer="zeros",
                                         trainable=False, aggregation="only_first_replica")
        self.built = True

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat = Euclidean().pairwise(l2_normalize(embeddings), l2_normalize(ref_embeddings))
        pos, neg = weights.label_masks(labels, ref_labels, same_source)
        ref_w = ops.expand_dims(weights.ref, 0)
        pos_w, neg_w = ops.where(pos, weights.pairs(), 0.0), ops.where(neg, ref_w, 0.0)
        t = ops.reshape(ops.expand_dims(mat, 2) - ops.expand_dims(mat, 1), (-1,))  # [B R R]: d_ap - d_an
        tw = ops.reshape(ops.expand_dims(pos_w, 2) * ops.expand_dims(neg_w, 1), (-1,))
        position = ops.stop_gradient((t - self.min_val) / self.delta)
        bins = ops.floor(position)
        fraction = position - bins
        last = self.num_bins - 1
        low = ops.cast(ops.clip(bins, 0, last), "int32")
        high = ops.cast(ops.clip(bins + 1, 0, last), "int32")
        spread = (ops.segment_sum(tw * (1.0 - fraction), low, num_segments=self.num_bins)
                  + ops.segment_sum(tw * fraction, high, num_segments=self.num_bins))
        old = self.histogram.value
        momentum = ops.where(ops.sum(old) != 0.0, self.momentum, 1.0)
        mixed = (1.0 - momentum) * old + momentum * spread
        has_triplet = ops.sum(tw) > 0
        self.histogram.assign(ops.where(has_triplet, mixed / ops.where(has_triplet, ops.sum(mixed), 1.0), old))
        cdf = ops.stop_gradient(ops.cumsum(self.histogram.value))
        return ops.take(cdf, low) * t, tw

    def get_config(self):
        return {**super().get_config(), "min_val": self.min_val, "num_bins": self.num_bins, "momentum": self.momentum}
