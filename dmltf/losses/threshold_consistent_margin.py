"""Threshold-consistent margin (TCM) loss.

Reference: Zhang et al. 2023, "Threshold-Consistent Margin Loss for Open-World Deep Metric
Learning" (arXiv 2307.04047); parameters and reduction as
pytorch-metric-learning 2.9 ``ThresholdConsistentMarginLoss`` (PML's ``tcm_loss``). With s the
similarity of a pair, over the positive pairs with s <= margin_plus and the negative pairs with
s >= margin_minus:

    loss = lambda_plus mean_{s_ap <= m+} (m+ - s_ap) + lambda_minus mean_{s_an >= m-} (s_an - m-)

a part with no such pair is 0. It is a regulariser meant to be added to a base loss (the
paper adds it to e.g. a triplet or proxy loss; use ``multiple_losses``). Defaults:
lambda_plus 1, lambda_minus 1, margin_plus 0.9, margin_minus 0.5, cosine similarity (defined
on similarities: ``cosine`` or ``dot``), all pairs (a miner's pairs are used, each once; PML
repeats a pair once per triplet it is in). The loss reduces itself (``reduction`` is unused).

Sample weights: a pair (i, j) weighs w_i w_j in its part's mean.

Deviation: PML looks the reference indices up in the batch instead of the references (a bug
with ``ref_emb``); here a query is compared with the references.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], "float32")
    >>> # positive pair at s = 0.6 (0.9 - 0.6 = 0.3), negatives at 0 and 0.8 (0.8 - 0.5 = 0.3)
    >>> round(float(get("threshold_consistent_margin")(np.array([0, 0, 1]), x)), 4)
    0.6
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, safe_divide
from dmltf.miners.base import pair_masks


@register("threshold_consistent_margin")
class ThresholdConsistentMarginLoss(PairLoss):
    default_distance = "cosine"
    requires_similarity = True

    def __init__(self, lambda_plus=1.0, lambda_minus=1.0, margin_plus=0.9, margin_minus=0.5, **kwargs):
        super().__init__(**kwargs)
        self.lambda_plus, self.lambda_minus = float(lambda_plus), float(lambda_minus)
        self.margin_plus, self.margin_minus = float(margin_plus), float(margin_minus)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        pair_w = weights.pairs()

        def part(mask, violation):
            w = ops.where(mask, pair_w, 0.0)
            return safe_divide(ops.sum(w * ops.where(mask, violation, 0.0)), ops.sum(w))

        pos_part = part(ops.logical_and(pos, mat <= self.margin_plus), self.margin_plus - mat)
        neg_part = part(ops.logical_and(neg, mat >= self.margin_minus), mat - self.margin_minus)
        return self.lambda_plus * pos_part + self.lambda_minus * neg_part, None

    def get_config(self):
        return {**super().get_config(), "lambda_plus": self.lambda_plus, "lambda_minus": self.lambda_minus,
                "margin_plus": self.margin_plus, "margin_minus": self.margin_minus}
