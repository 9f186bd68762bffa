"""SoftTriple loss.

Reference: Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling", ICCV
2019; official ``idstcv/SoftTriple`` ``loss/SoftTriple.py``. With K centres per class,
s_ck = x^ . w^_ck (both L2-normalised) and S_c = sum_k softmax_k(s_ck / gamma) s_ck:
``CE(la (S - margin onehot(y)), y) + tau sum_c sum_{k<k'} sqrt(2 + 1e-5 - 2 w^_ck . w^_ck') / (C K (K-1))``
(the regulariser only when tau > 0 and K > 1). Defaults K 10, la 20, gamma 0.1, margin 0.01, tau 0.2.

The weight is ``centers`` [embedding_dim, num_classes * centers_per_class], column c * K + k for
centre k of class c, initialised ``kaiming_uniform`` (a = sqrt 5, fan_in = C K) as the official
code; ``lr_multiplier`` 100 (centres lr 1e-2 over model lr 1e-4). ``ortho_weight`` acts on the
C K centres as rows.

Deviation: the embeddings are L2-normalised here; the official network does it before the loss
(identical values and gradients for normalised inputs).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("soft_triple", num_classes=3, embedding_dim=4, centers_per_class=2)
    >>> tuple(loss.centers.shape)
    (4, 6)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
import numpy as np
from keras import ops

from dmltf.distances import l2_normalize
from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss


@register("soft_triple")
class SoftTripleLoss(ClassifierLoss):
    lr_multiplier = 100.0
    default_initializer = "kaiming_uniform"

    def __init__(
        self, num_classes, embedding_dim, centers_per_class=10, la=20.0, gamma=0.1, margin=0.01, tau=0.2, **kwargs
    ):
        self.centers_per_class = int(centers_per_class)  # create_weights (called by the base) needs it
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.la, self.gamma, self.margin, self.tau = float(la), float(gamma), float(margin), float(tau)

    def create_weights(self, initializer):
        shape = (self.embedding_dim, self.num_classes * self.centers_per_class)
        self.centers = self.add_weight(name="centers", shape=shape, initializer=initializer, trainable=True)

    def normalized_centers(self):
        """Unit centres reshaped to [D, C, K]."""
        centers = l2_normalize(ops.cast(self.centers, "float32"), axis=0)
        return ops.reshape(centers, (self.embedding_dim, self.num_classes, self.centers_per_class))

    def proxy_rows(self):
        return ops.transpose(ops.cast(self.centers, "float32"))

    def logits(self, labels, embeddings):
        sim = ops.einsum("bd,dck->bck", l2_normalize(embeddings), self.normalized_centers())
        class_sim = ops.sum(ops.softmax(sim / self.gamma, axis=2) * sim, axis=2)
        return self.la * (class_sim - self.margin * ops.one_hot(labels, self.num_classes))

    def regularization(self):
        reg = super().regularization()
        k = self.centers_per_class
        if self.tau <= 0.0 or k <= 1:
            return reg
        centers = self.normalized_centers()
        within_class = ops.einsum("dck,dcl->ckl", centers, centers)  # [C, K, K]
        pairs = np.triu(np.ones((k, k), bool), 1)  # k < k'
        dist = ops.sqrt(2.0 + 1e-5 - 2.0 * within_class)
        total = ops.sum(ops.where(pairs, dist, 0.0))
        return reg + self.tau * total / (self.num_classes * k * (k - 1))

    def get_config(self):
        return {
            **super().get_config(),
            "centers_per_class": self.centers_per_class,
            "la": self.la,
            "gamma": self.gamma,
            "margin": self.margin,
            "tau": self.tau,
        }
