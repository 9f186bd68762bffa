"""P2SGrad: the squared error between the cosines to the class weights and the one-hot labels.

Reference: Zhang et al. 2019, "P2SGrad: Refined Gradients for Optimizing Deep
Face Models" (CVPR); parameters and reduction as pytorch-metric-learning 2.9 ``P2SGradLoss``
(after Xin Wang's ``p2sgrad.py``). With c_ij = clip(cos(x_i, w_j), -1, 1) for W = ``proxies``
[C, D], the gradient of the paper's equation 11 is that of

    L = (1 / (B C)) sum_i sum_j (c_ij - [j == y_i])^2

the mean squared error over the batch and the classes (per sample the mean over the classes,
then the mean over the batch). Defaults: ``normal`` initialisation (the rows are normalised in
the formula), ``lr_multiplier`` 1. Sample weights: sample i's term weighs w_i.

Deviation: PML renormalises its weight's columns to unit norm in place before each call, so its
gradient is that of x . w / |x| at |w| = 1 and has a radial part; here the weights are
normalised in the formula (w / |w|), whose gradient is PML's with the radial part removed and
divided by |w| (at unit norm the tangential part, the only part PML's renormalisation keeps to
first order). The value and the gradient for the embeddings are PML's. PML's initialisation
(uniform in [-1, 1]^D, then unit columns) only fixes the starting directions' distribution.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("p2s_grad", num_classes=2, embedding_dim=2)
    >>> _ = loss.proxies.assign(np.array([[2.0, 0.0], [0.0, 1.0]], "float32"))
    >>> x = np.array([[3.0, 0.0], [0.0, 0.5]], "float32")  # each on its class's direction
    >>> float(loss(np.array([0, 1]), x))
    0.0
"""
from keras import ops

from dmltf.distances import Cosine
from dmltf.losses import register
from dmltf.losses.base import ProxyLoss


@register("p2s_grad")
class P2SGradLoss(ProxyLoss):
    lr_multiplier = 1.0

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        cos = ops.clip(Cosine().pairwise(embeddings, ops.cast(self.proxies, "float32")), -1.0, 1.0)
        onehot = ops.one_hot(labels, self.num_classes)
        return ops.mean(ops.square(cos - onehot), axis=1), weights.query
