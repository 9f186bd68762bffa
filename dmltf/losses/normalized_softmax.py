"""Normalized softmax loss (NormSoftmax).

Reference: Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019
(no official code; pytorch-metric-learning ``NormalizedSoftmaxLoss`` is the common port).
Formula: ``-log softmax(cos(x, p) / temperature)_y`` over all C proxies, no bias, temperature 0.05.

Initialisation: ``normal`` (pytorch-metric-learning's default); the proxies are L2-normalised in
the formula, so their scale only sets how fast they turn. ``lr_multiplier`` 1 (the paper trains
the proxies with the network's optimizer; treat any other value as a tuning choice).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("normalized_softmax", num_classes=3, embedding_dim=4)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss


@register("normalized_softmax")
class NormalizedSoftmaxLoss(ClassifierLoss):
    def __init__(self, num_classes, embedding_dim, temperature=0.05, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.temperature = float(temperature)

    def logits(self, labels, embeddings):
        return self.cosine(embeddings) / self.temperature

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
