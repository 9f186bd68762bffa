"""Adapted triplet loss -- PROVISIONAL (the paper's exact matching term is unverified).

Reference: Yu, Liu, Gong, Ding & Tao 2018, "Correcting the Triplet Selection Bias for Triplet
Loss" (ECCV); no official code was found and only the abstract was read (METHODS.md 4.3b).
Implemented as METHODS.md recommends: ``L = L_triplet(S) + lambda_ * |mean_S phi - mean_T phi|^2``
with S the mined triplets (default semi-hard), T every valid triplet of the batch and
``phi(a, p, n) = f(a) * (f(n) - f(p))`` (elementwise): a linear-kernel MMD that matches the
first moment of the mined triplets to that of all triplets, with gradients (the TF2 reading
``harxish/Facenet-TF`` computes its matching term in numpy, without gradient). Both means are
computed without materialising T: sum_T phi = sum_a f(a) * (|P_a| sum_{n in N_a} f(n) -
|N_a| sum_{p in P_a} f(p)). Replace this term once the paper's definition is verified.
Sample weights: every triplet, mined or not, weighs w_a w_p w_n in the loss and in both means
(|P_a|, |N_a| become the summed weights of a's positives and negatives).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("adapted_triplet", margin=0.2, lambda_=1.0)
    >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2, 3, 3]), x)) >= 0
    True
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import reduce, safe_divide
from dmltf.losses.triplet import TripletLoss


@register("adapted_triplet")
class AdaptedTripletLoss(TripletLoss):
    default_miner = "semi_hard"

    def __init__(self, margin=0.1, lambda_=1.0, **kwargs):
        super().__init__(margin=margin, **kwargs)
        self.lambda_ = float(lambda_)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        losses, term_weights = self.pair_loss(mat, mined, self.distance, weights)
        b, r = ops.shape(mat)[0], ops.shape(mat)[1]
        count = lambda cols: ops.reshape(
            ops.scatter(ops.expand_dims(mined.anchor * r + cols, 1), mined.weight, (b * r,)), (b, r)
        )
        mined_mean = _mean_phi(count(mined.positive), count(mined.negative), embeddings, ref_embeddings)
        # Weighted |P_a|, |N_a| exclude w_a, which the pair counts bring in once.
        ref_w, query_w = ops.expand_dims(weights.ref, 0), ops.expand_dims(weights.query, 1)
        pos, neg = (ops.cast(m, "float32") * ref_w for m in weights.label_masks(labels, ref_labels, same_source))
        num_pos, num_neg = ops.sum(pos, axis=1, keepdims=True), ops.sum(neg, axis=1, keepdims=True)
        all_mean = _mean_phi(query_w * pos * num_neg, query_w * neg * num_pos, embeddings, ref_embeddings)
        match = ops.sum(ops.square(mined_mean - all_mean))
        return reduce(losses, term_weights, self.reduction) + self.lambda_ * match, None

    def get_config(self):
        return {**super().get_config(), "lambda_": self.lambda_}


def _mean_phi(pos_counts, neg_counts, embeddings, ref_embeddings):
    """Mean of f(a) * (f(n) - f(p)) over triplets given as [B, R] counts of their (a, p), (a, n) pairs."""
    total = ops.sum(embeddings * ops.matmul(neg_counts - pos_counts, ref_embeddings), axis=0)
    return safe_divide(total, ops.sum(pos_counts))
