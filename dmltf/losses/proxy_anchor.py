"""Proxy-Anchor loss.

Reference: Kim et al., CVPR 2020; official code ``tjddus9597/Proxy-Anchor-CVPR2020``
(``code/losses.py``). With s the cosine similarity, P+ the proxies with a positive in the batch
and C the number of classes:
``(1/|P+|) sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x,p) - margin)))
+ (1/C) sum_p log(1 + sum_{x in X_p-} exp(alpha (s(x,p) + margin)))``.
Proxies: kaiming_normal(fan_out); they learn 100x faster than the network (``lr_multiplier``).

Deviation: the log(1 + sum exp) terms are evaluated with a max shift, which the reference does
not do (same values, no overflow in float16 inputs).

``variant="dml_tf"`` reproduces shi510/dml-tf ``train/loss/proxyanchor.py`` (HEAD 323188e), which
uses log-sum-exp without the 1 and subtracts the positive term:
``(1/C) sum_p LSE_{x in X_p-}(alpha (s + margin)) - (1/B) sum_p LSE_{x in X_p+}(alpha (s - margin))``
(an empty set gives 0; the positive sum is divided by the number of positive pairs, B). dml-tf's
config uses alpha 64 and ``HeNormal`` proxies (std sqrt(2/C), as ``kaiming_normal`` here, untruncated).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("proxy_anchor", num_classes=3, embedding_dim=8)
    >>> x = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    >>> float(loss(np.array([0, 0, 1, 1, 2, 2]), x)) > 0
    True
"""
from keras import ops

from dmltf.distances import Cosine
from dmltf.losses import register
from dmltf.losses.base import ProxyLoss, log1p_sum_exp, log_sum_exp

VARIANTS = ("official", "dml_tf")


@register("proxy_anchor")
class ProxyAnchorLoss(ProxyLoss):
    default_initializer = "kaiming_normal"

    def __init__(self, num_classes, embedding_dim, alpha=32.0, margin=0.1, variant="official", **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"Unknown proxy_anchor variant {variant!r}; valid: {', '.join(VARIANTS)}")
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.alpha = float(alpha)
        self.margin = float(margin)
        self.variant = variant

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source):
        cos = Cosine().pairwise(embeddings, ops.cast(self.proxies, "float32"))  # [B, C]
        is_pos = ops.cast(ops.one_hot(labels, self.num_classes), "bool")
        if self.variant == "dml_tf":
            pos = ops.sum(log_sum_exp(self.alpha * (cos - self.margin), is_pos, axis=0))
            neg = ops.mean(log_sum_exp(self.alpha * (cos + self.margin), ops.logical_not(is_pos), axis=0))
            return neg - pos / ops.sum(ops.cast(is_pos, "float32")), None
        pos_term = log1p_sum_exp(-self.alpha * (cos - self.margin), is_pos, axis=0)  # [C]
        neg_term = log1p_sum_exp(self.alpha * (cos + self.margin), ops.logical_not(is_pos), axis=0)
        has_pos = ops.cast(ops.any(is_pos, axis=0), "float32")
        pos = ops.sum(pos_term * has_pos) / ops.maximum(ops.sum(has_pos), 1.0)
        return pos + ops.mean(neg_term), None

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "margin": self.margin, "variant": self.variant}
