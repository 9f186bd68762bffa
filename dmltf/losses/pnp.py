"""PNP loss (Rethinking the optimization of average precision: only penalising negative
instances before positive ones is enough).

Reference: Li et al. 2022 (AAAI), official ``interestingzhuo/PNPloss``;
parameters, variants and reduction as pytorch-metric-learning 2.9 ``PNPLoss``. With s the
similarity and, for query q and each of its positives i, the smoothed count of negatives ranked
before i

    R_qi = sum_{n in N(q)} sigmoid((s_qn - s_qi) / anneal)          (argument clipped to +-50)

the loss of q is the mean over its positives, q itself included (PML and the official code
count it), of f(R_qi), and the loss the mean over the queries with a positive; f by ``variant``:
``"O"`` R (default), ``"Ds"`` log(1 + R), ``"Dq"`` 1 / (1 + R)^alpha (then the loss is
1 - mean), ``"Iu"`` (1 + R) log(1 + R), ``"Ib"`` (b R - log(1 + b R)) / b^2. Defaults: b 2,
alpha 1, anneal 0.01, cosine similarity (it is defined on similarities: ``cosine`` or ``dot``),
all pairs (a miner's pairs restrict each query's positives and negatives). Memory O(B R^2): every
(query, positive, negative) comparison is the definition. A batch without a positive pair gives 0.

Sample weights: query q's term weighs w_q; each positive of its mean (q included) weighs its
sample's weight, each negative's sigmoid in R_qi its sample's weight.

Deviation: with references (PML refuses them) a query's positives and negatives are the
references, and the query is not one of its own positives.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> x = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]], "float32")
    >>> float(get("pnp")(np.array([0, 0, 1, 1]), x)) < 1e-6  # no negative before a positive
    True
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, safe_divide
from dmltf.miners.base import pair_masks

VARIANTS = ("Ds", "Dq", "Iu", "Ib", "O")


@register("pnp")
class PNPLoss(PairLoss):
    default_distance = "cosine"
    requires_similarity = True

    def __init__(self, b=2.0, alpha=1.0, anneal=0.01, variant="O", **kwargs):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"pnp: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.b, self.alpha, self.anneal, self.variant = float(b), float(alpha), float(anneal), variant

    def shape(self, rank):
        if self.variant == "Ds":
            return ops.log1p(rank)
        if self.variant == "Dq":
            return ops.power(1.0 + rank, -self.alpha)
        if self.variant == "Iu":
            return (1.0 + rank) * ops.log1p(rank)
        if self.variant == "Ib":
            return (self.b * rank - ops.log1p(self.b * rank)) / (self.b**2)
        return rank

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        pos, neg = pair_masks(mined, mat)
        ref_w = ops.expand_dims(weights.ref, 0)
        has_pos = ops.any(pos, axis=1)
        if same_source:  # the query is one of its own positives (PML, official code)
            eye = ops.cast(ops.eye(ops.shape(mat)[0]), "bool")
            pos = ops.logical_or(pos, ops.logical_and(eye, ops.expand_dims(has_pos, 1)))
        diff = (ops.expand_dims(mat, 1) - ops.expand_dims(mat, 2)) / self.anneal  # [q, i, n]: s_qn - s_qi
        before = ops.sigmoid(ops.clip(diff, -50.0, 50.0)) * ops.expand_dims(ops.where(neg, ref_w, 0.0), 1)
        rank = ops.sum(before, axis=2)  # [q, i]
        pos_w = ops.where(pos, ref_w, 0.0)
        term = safe_divide(ops.sum(pos_w * ops.where(pos, self.shape(rank), 0.0), axis=1), ops.sum(pos_w, axis=1))
        if self.variant == "Dq":
            term = 1.0 - term
        return ops.where(has_pos, term, 0.0), ops.where(has_pos, weights.query, 0.0)

    def get_config(self):
        return {**super().get_config(), "b": self.b, "alpha": self.alpha, "anneal": self.anneal,
                "variant": self.variant}

