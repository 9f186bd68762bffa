"""ProxyNCA++ loss.

Reference: Teh, DeVries, Taylor, "ProxyNCA++: Revisiting and Revitalizing Proxy Neighborhood
Component Analysis", ECCV 2020; official ``euwern/proxynca_pp`` ``loss.py`` (``ProxyNCA_prob``).
Formula: ``-log softmax_c(-|x/|x| - p_c/|p_c||^2 / temperature)_y`` with the positive in the
denominator; temperature 1/9 (the code's scale sqrt(1/T) = 3 on both normalised vectors).

Proxies start as randn(C, D)/8 (``normal_div8``). ``lr_multiplier`` 1e5: the "fast-moving
proxies" of the official setting, proxy lr 4e2 over base lr 4e-3. No deviation.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("proxy_nca_pp", num_classes=3, embedding_dim=4)
    >>> loss.lr_multiplier
    100000.0
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
import math

from dmltf.losses import register
from dmltf.losses.classifier import ClassifierLoss
from dmltf.losses.proxy_nca import negative_scaled_distances


@register("proxy_nca_pp")
class ProxyNCAPlusPlusLoss(ClassifierLoss):
    lr_multiplier = 1e5
    default_initializer = "normal_div8"

    def __init__(self, num_classes, embedding_dim, temperature=1.0 / 9.0, **kwargs):
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.temperature = float(temperature)

    def logits(self, labels, embeddings):
        scale = math.sqrt(1.0 / self.temperature)
        return negative_scaled_distances(embeddings, self.proxies, scale, scale)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
