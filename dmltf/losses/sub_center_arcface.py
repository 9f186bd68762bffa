"""Sub-center ArcFace: ArcFace with K learned centres per class, the nearest one used.

Reference: Deng et al. 2020, "Sub-center ArcFace: Boosting Face Recognition by
Large-scale Noisy Web Faces" (ECCV); parameters and reduction as pytorch-metric-learning 2.9
``SubCenterArcFaceLoss``. ``proxies`` is [C K, D], class c's centres in rows c K .. c K + K - 1
(PML's ``W`` [D, C K] transposed, the same order); the class cosine is the largest of its
centres', ``c_j = max_k cos(x, w_{j,k})``, and the rest is ``arcface``: with theta = arccos(c_y),
``-log softmax(scale * where(onehot(y), cos(theta + m), c))_y``, where past theta = pi - m the
target logit is ``c - m sin(m)`` (PML's and dmltf's arcface). The default reduction is the
mean over the batch.

Defaults: scale 64, margin 0.5 rad (the paper's; PML's default 28.6 degrees is it rounded),
sub_centers 3, ``normal`` initialisation (PML's), ``lr_multiplier`` 1. dmltf's margin is in
radians as in ``arcface`` (PML takes degrees). ``easy_margin`` as in ``arcface``. Sample
weights: sample i's term weighs w_i.

Deviations: ``sqrt(1 - c^2 + 1e-6)`` replaces PML's ``cos(arccos(c) + m)`` (``arcface``'s form:
the same value to ~1e-6, and a finite gradient at |c| = 1). PML's ``get_outliers`` (dropping
samples far from their class's dominant centre, a data-cleaning step) is not ported.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("sub_center_arcface", num_classes=3, embedding_dim=4, scale=16.0)
    >>> tuple(loss.proxies.shape)
    (9, 4)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
from keras import ops

from dmltf.distances import Cosine
from dmltf.losses import register
from dmltf.losses.arcface import ArcFaceLoss


@register("sub_center_arcface")
class SubCenterArcFaceLoss(ArcFaceLoss):
    default_initializer = "normal"

    def __init__(self, num_classes, embedding_dim, scale=64.0, margin=0.5, sub_centers=3, **kwargs):
        self.sub_centers = int(sub_centers)
        if self.sub_centers < 1:
            raise ValueError(f"sub_center_arcface: sub_centers must be >= 1, got {sub_centers}")
        super().__init__(num_classes, embedding_dim, scale=scale, margin=margin, **kwargs)

    def create_weights(self, initializer):
        self.proxies = self.add_weight(name="proxies", shape=(self.num_classes * self.sub_centers, self.embedding_dim),
                                       initializer=initializer, trainable=True)

    def cosine(self, embeddings):
        cos = Cosine().pairwise(embeddings, ops.cast(self.proxies, "float32"))
        return ops.max(ops.reshape(cos, (-1, self.num_classes, self.sub_centers)), axis=2)

    def get_config(self):
        return {**super().get_config(), "sub_centers": self.sub_centers}
