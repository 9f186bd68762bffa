"""CosFace (large margin cosine loss).

Reference: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018.
Formula: ``-log softmax(scale * (cos(x, p) - margin * onehot(y)))_y``; scale 64, margin 0.35.

Initialisation: ``normal`` (proxies are L2-normalised in the formula). ``lr_multiplier`` 1 (the
paper trains the class weights with the network). No deviation.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("cosface", num_classes=3, embedding_dim=4)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss


@register("cosface")
class CosFaceLoss(ClassifierLoss):
    def __init__(self, num_classes, embedding_dim, scale=64.0, margin=0.35, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.scale = float(scale)
        self.margin = float(margin)

    def logits(self, labels, embeddings):
        onehot = ops.one_hot(labels, self.num_classes)
        return self.scale * (self.cosine(embeddings) - self.margin * onehot)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin}
