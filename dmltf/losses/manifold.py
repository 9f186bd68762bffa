"""Manifold loss: proxies ranked by random-walk (manifold) similarity on a graph of the batch.

Reference: Aziere & Todorovic 2019, "Ensemble Deep Manifold Similarity Learning using Hard
Proxies" (CVPR); parameters and reduction as pytorch-metric-learning 2.9 ``ManifoldLoss``. The
B embeddings and the K proxies (``proxies`` [K, D], K = ``num_classes``) are the nodes of a
graph with edge weights ``S_uv = exp(2 max(cos(u, v), 0))`` (0 on the diagonal); with
``S^ = Deg^-1/2 S Deg^-1/2`` the random walk's manifold similarity is
``F = (1 - alpha) (I - alpha S^)^-1``. Sample i's meta-class m_i is its label (a proxy index),
and for scores z_ik over the proxies its hinge term is

    h_i(z) = log(1 + sum_{k != m_i, z_ik - z_i,m_i + margin >= 0} exp(z_ik - z_i,m_i + margin))

the loss is ``mean_i h_i(F[i, proxies]) + lambda_c mean_i h_i(cos(F[i, :], F[proxy k, :]))``
(intrinsic and context terms). Defaults: lambda_c 1 (``inf``: the context term only), alpha
0.8, margin 5e-4, ``normal`` initialisation (PML's ``torch.randn``), ``lr_multiplier`` 1.
Memory O((B + K)^2), time O((B + K)^3) (a matrix inverse: the definition).

Sample weights: every edge weighs w_u w_v (proxies weigh 1), so a zero-weight sample leaves
the graph; sample i's term weighs w_i.

Deviations: PML takes no labels and draws the meta-classes at random unless they are given as
``indices_tuple``; dmltf takes them from the labels (in [0, num_classes), the proxy count;
random labels reproduce PML's default). PML's ``lambdaC=inf`` computes ``0 + inf * loss``;
here it is the context term alone, as PML's docstring says.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("manifold", num_classes=3, embedding_dim=4)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) >= 0
    True
"""
import math

from keras import ops

from dmltf.distances import Cosine
from dmltf.losses import register
from dmltf.losses.base import ProxyLoss, log1p_sum_exp


def hinge_over_proxies(scores, own, margin):
    """[B]: log(1 + sum_{k != own, z_k - z_own + margin >= 0} exp(z_k - z_own + margin))."""
    own_score = ops.sum(ops.where(own, scores, 0.0), axis=1, keepdims=True)
    violation = scores - own_score + margin
    return log1p_sum_exp(violation, ops.logical_and(ops.logical_not(own), violation >= 0.0), axis=1)


@register("manifold")
class ManifoldLoss(ProxyLoss):
    lr_multiplier = 1.0

    def __init__(self, num_classes, embedding_dim, lambda_c=1.0, alpha=0.8, margin=5e-4, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.lambda_c, self.alpha, self.margin = float(lambda_c), float(alpha), float(margin)
        if self.lambda_c < 0 or not 0.0 < self.alpha < 1.0:
            raise ValueError(f"manifold: need lambda_c >= 0 and 0 < alpha < 1, got {lambda_c}, {alpha}")

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        n = ops.shape(embeddings)[0]
        nodes = ops.concatenate([embeddings, ops.cast(self.proxies, "float32")], axis=0)
        node_w = ops.concatenate([weights.query, ops.ones((self.num_classes,), "float32")], axis=0)
        size = ops.shape(nodes)[0]
        eye = ops.eye(size)
        edges = ops.exp(ops.maximum(Cosine().pairwise(nodes, nodes), 0.0) / 0.5) * (1.0 - eye)
        edges = edges * ops.expand_dims(node_w, 1) * ops.expand_dims(node_w, 0)
        degree = ops.sum(edges, axis=1)
        scale = ops.where(degree > 0, ops.rsqrt(ops.where(degree > 0, degree, 1.0)), 0.0)
        normalised = ops.expand_dims(scale, 1) * edges * ops.expand_dims(scale, 0)
        manifold = (1.0 - self.alpha) * ops.linalg.inv(eye - self.alpha * normalised)
        of_samples, of_proxies = manifold[:n], manifold[n:]
        own = ops.cast(ops.one_hot(labels, self.num_classes), "bool")
        context = hinge_over_proxies(Cosine().pairwise(of_samples, of_proxies), own, self.margin)
        if math.isinf(self.lambda_c):
            return context, weights.query
        intrinsic = hinge_over_proxies(of_samples[:, n:], own, self.margin)
        return intrinsic + self.lambda_c * context, weights.query

    def get_config(self):
        return {**super().get_config(), "lambda_c": self.lambda_c, "alpha": self.alpha, "margin": self.margin}
