"""Margin sample mining loss (PaddlePaddle's "quadruplet" loss).

Reference: Xiao, Luo, Zheng & Yang 2017, "Margin Sample Mining Loss"; PaddlePaddle
``models/PaddleCV/metric_learning/losses/quadrupletloss.py`` (METHODS.md 5.3). On the
L2-normalised embeddings (the loss normalises) with squared euclidean distances D:
``[max over all positive pairs of D - min over all negative pairs of D + margin]_+`` -- one
scalar per batch (the hardest positive and hardest negative pair of the whole batch, not per
anchor). Paddle computes it per GPU sub-batch; here it is computed over queries x references.
A batch without a positive or a negative pair gives 0.
Sample weights: a zero-weight sample's pairs take no part in either extreme. Fractional
weights leave the value as it is: the loss is one term, and the weighted mean of one term is
that term (scaling it by the weights of the two extreme pairs would make the hardest pair
matter less the lighter its samples, which is no longer a maximum).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]], "float32")
    >>> round(float(get("margin_sample_mining")(np.array([0, 0, 1]), x)), 4)  # 2 - 0.0099 + 0.1
    2.0901
"""
from keras import ops

from dmltf.distances import SquaredEuclidean, l2_normalize
from dmltf.losses import register
from dmltf.losses.base import MetricLoss
from dmltf.miners.base import BIG


@register("margin_sample_mining")
class MarginSampleMiningLoss(MetricLoss):
    def __init__(self, margin=0.1, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        d = SquaredEuclidean().pairwise(l2_normalize(embeddings), l2_normalize(ref_embeddings))
        pos, neg = weights.label_masks(labels, ref_labels, same_source)
        hardest_pos = ops.max(ops.where(pos, d, -BIG))
        hardest_neg = ops.min(ops.where(neg, d, BIG))
        valid = ops.logical_and(ops.any(pos), ops.any(neg))
        return ops.where(valid, ops.relu(hardest_pos - hardest_neg + self.margin), 0.0), None

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
