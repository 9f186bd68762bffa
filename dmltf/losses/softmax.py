"""Softmax loss: a linear classifier on the raw embeddings, trained with cross-entropy.

Reference: PaddlePaddle/models ``PaddleCV/metric_learning/losses/softmaxloss.py`` (the
``train_elem.py --loss_name=softmax`` pre-training). Formula:
``-log softmax(x W^T + b)_y`` with W = ``proxies`` [C, D] and b = ``bias`` [C] (``use_bias``).

Initialisation: ``kaiming_uniform`` (default) is Uniform(+-1/sqrt(D)), which is both Paddle's
``Uniform(-stdv, stdv)`` with stdv = 1/sqrt(D) and PyTorch's ``nn.Linear`` default; the bias
starts at 0 as Paddle's fc. ``lr_multiplier`` 1: Paddle trains the classifier with the network.

Deviation: Paddle applies softmax then cross-entropy in two ops; here it is one stable log-sum-exp.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("softmax", num_classes=3, embedding_dim=4)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss


@register("softmax")
class SoftmaxLoss(ClassifierLoss):
    default_initializer = "kaiming_uniform"

    def __init__(self, num_classes, embedding_dim, use_bias=True, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.use_bias = bool(use_bias)
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros") if use_bias else None

    def logits(self, labels, embeddings):
        logits = ops.matmul(embeddings, ops.transpose(ops.cast(self.proxies, "float32")))
        return logits if self.bias is None else logits + ops.cast(self.bias, "float32")

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias}
