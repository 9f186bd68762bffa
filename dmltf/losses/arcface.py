"""ArcFace (additive angular margin), in PaddlePaddle's arcmargin form.

Reference: Deng et al., "ArcFace", CVPR 2019; the formula follows PaddlePaddle/models
``PaddleCV/metric_learning/losses/arcmarginloss.py`` (also insightface's). With c = cos(x, p):
``phi = c cos(m) - sqrt(1 - c^2 + 1e-6) sin(m)``, replaced by ``c - sin(pi - m) m`` where
``c <= cos(pi - m)`` (or by c where c <= 0 with ``easy_margin``);
loss ``-log softmax(scale * where(onehot(y), phi, c))_y``.

Defaults scale 64, margin 0.5 rad, easy_margin False (the paper). Paddle's flagfile uses
``scale=80, margin=0.15``. Initialisation ``xavier_uniform`` as Paddle; ``lr_multiplier`` 1.

Deviation: Paddle applies softmax then cross-entropy in two ops; here it is one stable log-sum-exp.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("arcface", num_classes=3, embedding_dim=4, scale=80.0, margin=0.15)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
import math

from keras import ops

from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss


@register("arcface")
class ArcFaceLoss(ClassifierLoss):
    default_initializer = "xavier_uniform"

    def __init__(self, num_classes, embedding_dim, scale=64.0, margin=0.5, easy_margin=False, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.scale = float(scale)
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)

    def logits(self, labels, embeddings):
        cos = self.cosine(embeddings)
        sin = ops.sqrt(1.0 - ops.square(cos) + 1e-6)  # the 1e-6 keeps the gradient finite at |c| = 1
        phi = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        if self.easy_margin:
            phi = ops.where(cos > 0.0, phi, cos)
        else:  # past theta = pi - m, cos(theta + m) would increase again: use a linear penalty
            threshold, penalty = math.cos(math.pi - self.margin), math.sin(math.pi - self.margin) * self.margin
            phi = ops.where(cos > threshold, phi, cos - penalty)
        is_pos = ops.cast(ops.one_hot(labels, self.num_classes), "bool")
        return self.scale * ops.where(is_pos, phi, cos)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin, "easy_margin": self.easy_margin}
