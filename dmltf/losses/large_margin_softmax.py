"""Large-margin softmax (L-Softmax) loss.

Reference: Liu, Wen, Yu & Yang 2016, "Large-Margin Softmax Loss for Convolutional Neural
Networks" (ICML); parameters, defaults and reduction as pytorch-metric-learning 2.9
``LargeMarginSoftmaxLoss``. With W = ``proxies`` [C, D] (PML's ``W`` transposed), c_j the cosine
of x and w_j and theta_y = arccos(c_y) the angle to the sample's own class, the logits are

    logit_j = scale |w_j| |x| c_j                                  (j != y)
    logit_y = scale |w_y| |x| psi(theta_y),  psi = (-1)^k cos(m theta) - 2k,  k = floor(m theta / pi)

with cos(m theta) from the multiple-angle formula (the paper's equation 7), a polynomial in c_y:
``sum_n (-1)^n binom(m, 2n) c^(m - 2n) (1 - c^2)^n``; k is piecewise constant (no gradient).
The loss is the cross-entropy ``log sum_j exp(logit_j) - logit_y`` and the default reduction
the mean over the batch. Defaults: margin m = 4 (an integer; PML truncates with ``int``),
scale 1, ``normal`` initialisation (PML's ``torch.nn.init.normal_``), ``lr_multiplier`` 1 (the
class weights train with the network). Sample weights: sample i's term weighs w_i.

Deviations: none in the formula. PML's ``weight_regularizer`` mixin is not reproduced
(``ortho_weight`` is dmltf's regulariser on the class weights), nor its ``avg_angle`` statistic.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("large_margin_softmax", num_classes=3, embedding_dim=4, margin=1)  # m = 1: plain softmax
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> y = np.array([0, 0, 1, 1, 2, 2])
    >>> logits = x @ np.asarray(loss.proxies).T
    >>> want = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(6), y])
    >>> bool(np.isclose(float(loss(y, x)), want, rtol=1e-5))
    True
"""
import math

from keras import ops

from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss


def cos_multiple_angle(cos, m):
    """cos(m theta) as a polynomial in cos(theta) (the multiple-angle formula)."""
    sin2 = 1.0 - ops.square(cos)
    return sum((-1) ** n * math.comb(m, 2 * n) * ops.power(cos, m - 2 * n) * ops.power(sin2, n)
               for n in range(m // 2 + 1))


def norms(x):
    return ops.sqrt(ops.sum(ops.square(x), axis=-1))


@register("large_margin_softmax")
class LargeMarginSoftmaxLoss(ClassifierLoss):
    def __init__(self, num_classes, embedding_dim, margin=4, scale=1.0, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.margin = int(margin)
        if self.margin < 1:
            raise ValueError(f"{self.registry_name}: margin must be an integer >= 1, got {margin}")
        self.scale = float(scale)

    def magnitudes(self, embeddings):
        """[B, C]: what the cosines are multiplied by (before ``scale``): |w_j| |x_i|."""
        return ops.expand_dims(norms(embeddings), 1) * ops.expand_dims(norms(ops.cast(self.proxies, "float32")), 0)

    def logits(self, labels, embeddings):
        cos = self.cosine(embeddings)
        theta = ops.arccos(ops.clip(cos, -1.0, 1.0))
        k = ops.stop_gradient(ops.floor(theta / (math.pi / self.margin)))
        sign = 1.0 - 2.0 * ops.mod(k, 2.0)  # (-1)^k
        psi = sign * cos_multiple_angle(cos, self.margin) - 2.0 * k
        is_pos = ops.cast(ops.one_hot(labels, self.num_classes), "bool")
        return self.scale * self.magnitudes(embeddings) * ops.where(is_pos, psi, cos)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "scale": self.scale}
