"""SphereFace (A-Softmax) loss: large-margin softmax on normalised class weights.

Reference: Liu, Wen, Yu, Li, Raj & Song 2017, "SphereFace: Deep Hypersphere Embedding for Face
Recognition" (CVPR); parameters, defaults and reduction as pytorch-metric-learning 2.9
``SphereFaceLoss``. It is ``large_margin_softmax`` with the class weights' norms dropped from
the logits: ``logit_j = scale |x| c_j`` (j != y), ``logit_y = scale |x| psi(theta_y)`` with the
same psi = (-1)^k cos(m theta) - 2k; the cross-entropy is averaged over the batch. Defaults
margin 4, scale 1, ``normal`` initialisation, ``lr_multiplier`` 1. Sample weights: sample i's
term weighs w_i.

Deviations: the paper anneals from the softmax to psi (``lambda``) during training; PML and dmltf
use psi from the start (mix with a softmax through ``multiple_losses`` to anneal).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("sphereface", num_classes=3, embedding_dim=4)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.large_margin_softmax import LargeMarginSoftmaxLoss, norms


@register("sphereface")
class SphereFaceLoss(LargeMarginSoftmaxLoss):
    def magnitudes(self, embeddings):
        return ops.expand_dims(norms(embeddings), 1)
