"""ProxyNCA loss.

Reference: Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies", ICCV 2017;
the port follows shi510/dml-tf ``train/loss/proxynca.py`` at 1df42c0 (from dichotomies/proxy-nca).
With x~ = embedding_scale x/|x| and p~ = proxy_scale p/|p|, D_c = |x~ - p~_c|^2:
``l = -log(exp(-D_y) / sum_{c != y} exp(-D_c))`` (``exclude_positive``, the paper), mean over the batch.

Defaults: embedding_scale 1, proxy_scale 3 (the constructor default; dml-tf's config uses 8),
proxies ``normal`` (tf.random.normal), ``lr_multiplier`` 1 (dml-tf 1df42c0 trains proxies and
network with one Adam; dml-tf HEAD uses 100, dichotomies/proxy-nca about 111).
``exclude_positive=False`` puts the positive in the denominator (ProxyNCA++ "prob" form);
``hinge=True`` clips each l at 0 as dml-tf 1df42c0 does.

dml-tf HEAD's form, logits s cos(x, p) with the positive excluded, is this loss with
``2 * embedding_scale * proxy_scale = s`` (D_c = sx^2 + sp^2 - 2 sx sp cos, and the constant
cancels), e.g. s = 32 is embedding_scale 1, proxy_scale 16.

Deviations: dml-tf adds 1e-6 to the denominator after shifting D by its batch maximum (a
batch-dependent epsilon); here the log-sum-exp is exact. ``exclude_positive`` needs 2+ classes.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("proxy_nca", num_classes=3, embedding_dim=4, proxy_scale=8.0)
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> bool(np.isfinite(loss(np.array([0, 0, 1, 1, 2, 2]), x)))
    True
"""
from keras import ops

from dmltf.distances import SquaredEuclidean, l2_normalize
from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss


def negative_scaled_distances(embeddings, proxies, embedding_scale, proxy_scale):
    """-|sx x/|x| - sp p/|p| |^2, the NCA logits [B, C]."""
    x = embedding_scale * l2_normalize(embeddings)
    p = proxy_scale * l2_normalize(ops.cast(proxies, "float32"))
    return -SquaredEuclidean().pairwise(x, p)


@register("proxy_nca")
class ProxyNCALoss(ClassifierLoss):
    def __init__(
        self, num_classes, embedding_dim, embedding_scale=1.0, proxy_scale=3.0, exclude_positive=True, hinge=False,
        **kwargs,
    ):
        if exclude_positive and int(num_classes) < 2:
            raise ValueError("proxy_nca with exclude_positive=True needs num_classes >= 2 (empty denominator)")
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.embedding_scale = float(embedding_scale)
        self.proxy_scale = float(proxy_scale)
        self.exclude_positive = bool(exclude_positive)
        self.hinge = bool(hinge)

    def logits(self, labels, embeddings):
        return negative_scaled_distances(embeddings, self.proxies, self.embedding_scale, self.proxy_scale)

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        losses, term_weights = super().compute_loss(
            labels, embeddings, ref_labels, ref_embeddings, same_source, weights
        )
        return (ops.maximum(losses, 0.0) if self.hinge else losses), term_weights

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_scale": self.embedding_scale,
            "proxy_scale": self.proxy_scale,
            "exclude_positive": self.exclude_positive,
            "hinge": self.hinge,
        }
