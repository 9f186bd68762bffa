"""Soft nearest neighbour loss.

Reference: Frosst, Papernot & Hinton 2019, "Analyzing and Improving Representations with the
Soft Nearest Neighbor Loss" (ICML); parameters and reduction as TensorFlow Similarity 0.17
``SoftNearestNeighborLoss``. With d the distance (for a similarity s, -s) and T the temperature,
per sample i with positives P(i) and negatives N(i):

    l_i = -log( sum_{p in P(i)} exp(-d_ip / T) / sum_{j in P(i) u N(i)} exp(-d_ij / T) )

and the default reduction is the mean over all samples, a sample without a positive adding 0
(TFSim's ``excl`` mask under Keras' mean over the batch). Defaults: temperature 1, squared
euclidean distance (TFSim's ``"sql2"``), all pairs (a miner's pairs restrict P and N). It is the
``nca`` loss with ``softmax_scale = 1 / T`` and another reduction (nca averages over the samples
with a positive). TFSim's ``"cosine"`` is the distance 1 - s: dmltf's ``distance="cosine"``
(the similarity s) gives the same loss, the constant cancelling in the ratio.

Sample weights: sample i's term weighs w_i; each exponential the weight of its sample.

Deviations: TFSim computes log(1e-9 + ratio), which caps a term near 20.7; here the log-sum-exp
difference is exact. With references (TFSim's class compares the batch with itself) a query is
compared with the references.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[0.0], [1.0], [3.0]], "float32")
    >>> round(float(get("soft_nearest_neighbor")(np.array([0, 0, 1]), x)), 4)  # nca's example, / 3
    0.0163
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp
from dmltf.losses.ntxent import logits_of
from dmltf.miners.base import pair_masks


@register("soft_nearest_neighbor")
class SoftNearestNeighborLoss(PairLoss):
    default_distance = "squared_euclidean"

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        logits = logits_of(mat, distance, 1.0 / self.temperature)
        ref_w = ops.expand_dims(weights.ref, 0)
        everyone = log_sum_exp(logits, ops.logical_or(pos, neg), axis=1, weights=ref_w)
        positives = log_sum_exp(logits, pos, axis=1, weights=ref_w)
        return ops.where(ops.any(pos, axis=1), everyone - positives, 0.0), weights.query

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
