"""Contrastive loss.

Reference: Hadsell, Chopra & LeCun 2006, "Dimensionality Reduction by Learning an Invariant
Mapping"; parameters and reduction as pytorch-metric-learning ``ContrastiveLoss``.
Positive pairs: ``[d - pos_margin]_+``; negative pairs: ``[neg_margin - d]_+`` (for a
similarity s: ``[pos_margin - s]_+`` and ``[s - neg_margin]_+``). ``squared=True`` squares
both hinges, Hadsell et al.'s form (without its constant factor 1/2). The positive and the
negative terms are reduced separately (default: mean over the non-zero terms) and added.
A triplet miner's output gives one positive and one negative pair per triplet.
Sample weights: a pair (i, j) weighs w_i w_j; a pair taken from a mined triplet carries the
triplet's weight w_a w_p w_n (the tuple the miner chose).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("contrastive", neg_margin=1.0)
    >>> x = np.array([[0.0], [0.5], [0.8]], "float32")
    >>> round(float(loss(np.array([0, 0, 1]), x)), 4)  # positive 0.5; negatives at 0.8, 0.3: 0.2, 0.7
    0.95
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, reduce
from dmltf.miners.base import pair_lists


@register("contrastive")
class ContrastiveLoss(PairLoss):
    default_reduction = "mean_nonzero"

    def __init__(self, pos_margin=0.0, neg_margin=1.0, squared=False, **kwargs):
        super().__init__(**kwargs)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.squared = bool(squared)

    def pair_loss(self, mat, mined, distance, weights):
        (pos_d, pos_w, _), (neg_d, neg_w, _) = pair_lists(mat, mined)
        pos_term = ops.relu(distance.margin(self.pos_margin, pos_d))
        neg_term = ops.relu(distance.margin(neg_d, self.neg_margin))
        if self.squared:
            pos_term, neg_term = ops.square(pos_term), ops.square(neg_term)
        return reduce(pos_term, pos_w, self.reduction) + reduce(neg_term, neg_w, self.reduction), None

    def get_config(self):
        return {**super().get_config(), "pos_margin": self.pos_margin, "neg_margin": self.neg_margin,
                "squared": self.squared}
