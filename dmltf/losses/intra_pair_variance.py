"""Intra-pair variance loss.

Reference: Yu & Tao 2019, "Deep Metric Learning with Tuplet Margin Loss" (ICCV), the
intra-pair variance regulariser; parameters and reduction as pytorch-metric-learning 2.9
``IntraPairVarianceLoss``. With the mean similarity mu_+ of the positive pairs and mu_- of the
negative pairs (means over the used pairs, in the gradient as in PML):

    positive pair: [(1 - pos_eps) mu_+ - s]_+^2        negative pair: [s - (1 + neg_eps) mu_-]_+^2

for a similarity s; for a distance d the roles swap (``[d - (1 + pos_eps) mu_+]_+^2``,
``[(1 - neg_eps) mu_- - d]_+^2``). Each part is reduced separately (default: the mean over its
pairs, PML's ``MeanReducer``) and the two are added. Defaults: pos_eps = neg_eps = 0.01,
cosine similarity, all pairs; a triplet miner's output gives one positive and one negative
pair per triplet. A part without pairs adds 0. Usually added to ``tuplet_margin``
(``multiple_losses``). Sample weights: a pair (i, j) weighs w_i w_j, in the means mu too.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], "float32")
    >>> # positives both at 0.8 (no variance); negatives at 0, 0.6 (twice each): mu_- = 0.3
    >>> round(float(get("intra_pair_variance")(np.array([0, 0, 1]), x)), 4)  # (0.6 - 0.303)^2 / 2
    0.0441
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, reduce, safe_divide
from dmltf.miners.base import pair_lists


@register("intra_pair_variance")
class IntraPairVarianceLoss(PairLoss):
    default_distance = "cosine"

    def __init__(self, pos_eps=0.01, neg_eps=0.01, **kwargs):
        super().__init__(**kwargs)
        self.pos_eps = float(pos_eps)
        self.neg_eps = float(neg_eps)

    def pair_loss(self, mat, mined, distance, weights):
        (pos_v, pos_w, _), (neg_v, neg_w, _) = pair_lists(mat, mined)
        mean = lambda values, w: safe_divide(ops.sum(values * w), ops.sum(w))  # noqa: E731
        mu_pos, mu_neg = mean(pos_v, pos_w), mean(neg_v, neg_w)
        if distance.is_inverted:
            pos_term = ops.relu((1.0 - self.pos_eps) * mu_pos - pos_v)
            neg_term = ops.relu(neg_v - (1.0 + self.neg_eps) * mu_neg)
        else:
            pos_term = ops.relu(pos_v - (1.0 + self.pos_eps) * mu_pos)
            neg_term = ops.relu((1.0 - self.neg_eps) * mu_neg - neg_v)
        pos_part = reduce(ops.square(pos_term), pos_w, self.reduction)
        return pos_part + reduce(ops.square(neg_term), neg_w, self.reduction), None

    def get_config(self):
        return {**super().get_config(), "pos_eps": self.pos_eps, "neg_eps": self.neg_eps}
