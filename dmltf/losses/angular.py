"""Angular loss (N-pair form).

Reference: Wang, Zhou, Wen, Liu & Lin 2017, "Deep Metric Learning with Angular Loss", Eq. 8;
pytorch-metric-learning ``AngularLoss``. For a positive pair (a, p) and the negatives n of a,
on L2-normalised embeddings (the default cosine distance normalises):
``log(1 + sum_n exp(4 tan^2(alpha) (x_a + x_p) . x_n - 2 (1 + tan^2(alpha)) x_a . x_p))``,
averaged over the positive pairs whose anchor has a negative; ``alpha`` in degrees.
Sample weights: the term of (a, p) weighs w_a w_p and each exponential inside it w_n.
Memory is O(B * R^2) (every pair with every negative), like any all-triplets loss.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("angular", alpha=40)
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], "float32")
    >>> float(loss(np.array([0, 0, 1]), x)) > 0
    True
"""
import math

from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, log1p_sum_exp
from dmltf.miners.base import pair_masks


@register("angular")
class AngularLoss(PairLoss):
    default_distance = "cosine"
    requires_similarity = True

    def __init__(self, alpha=40.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        ref_mat = mat if same_source else self.distance.pairwise(ref_embeddings, ref_embeddings)
        pos, neg = pair_masks(mined, mat)
        sq_tan = math.tan(math.radians(self.alpha)) ** 2
        # logits[a, p, n] = 4 tan^2 (s_an + s_pn) - 2 (1 + tan^2) s_ap
        logits = 4.0 * sq_tan * (ops.expand_dims(mat, 1) + ops.expand_dims(ref_mat, 0)) - 2.0 * (
            1.0 + sq_tan
        ) * ops.expand_dims(mat, 2)
        negatives = ops.broadcast_to(ops.expand_dims(neg, 1), ops.shape(logits))
        losses = log1p_sum_exp(logits, negatives, axis=2, weights=ops.reshape(weights.ref, (1, 1, -1)))
        used = ops.logical_and(pos, ops.any(neg, axis=1, keepdims=True))
        return losses, ops.where(used, weights.pairs(), 0.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
