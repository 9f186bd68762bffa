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

Sample weights: the terms belong to proxies, so they stay averaged over proxies (1/|P+|,
1/C); inside each proxy's sums the exponential of sample x weighs w_x, and a proxy is in P+
only through positives of weight > 0. In ``dml_tf`` the positive sum is divided by the summed
sample weights (its B).

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
from dmltf.losses.base import ProxyLoss, log1p_sum_exp, log_sum_exp, safe_divide

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

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        cos = Cosine().pairwise(embeddings, ops.cast(self.proxies, "float32"))  # [B, C]
        is_pos = ops.cast(ops.one_hot(labels, self.num_classes), "bool")
        is_neg = ops.logical_not(is_pos)
        sample_w = ops.expand_dims(weights.query, 1)
        if self.variant == "dml_tf":
            pos = ops.sum(log_sum_exp(self.alpha * (cos - self.margin), is_pos, axis=0, weights=sample_w))
            neg = ops.mean(log_sum_exp(self.alpha * (cos + self.margin), is_neg, axis=0, weights=sample_w))
            return neg - safe_divide(pos, ops.sum(weights.query)), None
        pos_term = log1p_sum_exp(-self.alpha * (cos - self.margin), is_pos, axis=0, weights=sample_w)  # [C]
        neg_term = log1p_sum_exp(self.alpha * (cos + self.margin), is_neg, axis=0, weights=sample_w)
        has_pos = ops.cast(ops.any(ops.logical_and(is_pos, sample_w > 0), axis=0), "float32")
        pos = safe_divide(ops.sum(pos_term * has_pos), ops.sum(has_pos))
        return pos + ops.mean(neg_term), None

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "margin": self.margin, "variant": self.variant}
