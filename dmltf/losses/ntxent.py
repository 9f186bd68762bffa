"""NT-Xent (normalized temperature-scaled cross-entropy, InfoNCE) loss.

Reference: Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive
Learning of Visual Representations" (SimCLR), and van den Oord et al. 2018 (InfoNCE); the
supervised multi-positive form, parameters and reduction as pytorch-metric-learning 2.9
``NTXentLoss``. With l_ij = s_ij / temperature (s a similarity; for a distance d, -d), every
positive pair (i, p) is one term

    -log( exp(l_ip) / (exp(l_ip) + sum_{n in N(i)} exp(l_in)) )

where N(i) are the negatives of anchor i; the default reduction is the mean over the positive
pairs. Defaults: temperature 0.07, cosine similarity, all pairs (``miner="all"``); a miner's
pairs are the positives and the per-anchor negatives used (a triplet miner's output as pairs,
each pair once, where PML repeats a pair once per triplet it is in).
A positive pair whose anchor has no negative adds a 0 term, as in PML; a batch without a
positive pair gives 0. Sample weights: a positive pair (i, p) weighs w_i w_p, each negative's
exponential w_n.

Deviation: PML computes log(ratio + tiny) (float32 tiny = 1.2e-38); here the ratio's log is a
softplus of the log-sum-exp difference, the same value without the tiny offset.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("ntxent", temperature=0.5)
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], "float32")
    >>> round(float(loss(np.array([0, 1, 0, 1]), x)), 4)  # log(1 + 2 exp(-2)) per positive pair
    0.2395
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log_sum_exp
from dmltf.miners.base import pair_masks


def softplus_over_negatives(pos_logits, neg_logits, neg, neg_weights):
    """[B, R] ``log(1 + sum_{n in neg[i]} w_n exp(neg_logits[i, n] - pos_logits[i, j]))``: the
    term of every pair (i, j) against anchor i's negatives; 0 where anchor i has none."""
    has_neg = ops.any(neg, axis=1, keepdims=True)
    negatives = ops.expand_dims(log_sum_exp(neg_logits, neg, axis=1, weights=neg_weights), 1)
    return ops.where(has_neg, ops.softplus(negatives - pos_logits), 0.0)


def logits_of(mat, distance, scale):
    """Similarities times ``scale``: the matrix itself for similarities, its negation for distances."""
    return (mat if distance.is_inverted else -mat) * scale


@register("ntxent")
class NTXentLoss(PairLoss):
    default_distance = "cosine"

    def __init__(self, temperature=0.07, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def pair_loss(self, mat, mined, distance, weights):
        pos, neg = pair_masks(mined, mat)
        logits = logits_of(mat, distance, 1.0 / self.temperature)
        terms = softplus_over_negatives(logits, logits, neg, ops.expand_dims(weights.ref, 0))
        term_weights = ops.where(pos, weights.pairs(), 0.0)
        return ops.reshape(ops.where(pos, terms, 0.0), (-1,)), ops.reshape(term_weights, (-1,))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
