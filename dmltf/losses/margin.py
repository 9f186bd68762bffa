"""Margin loss with a (optionally learned) boundary beta.

Reference: Wu, Manmatha, Smola & Krähenbühl 2017, "Sampling Matters in Deep Embedding
Learning"; Revisiting-DML ``criteria/margin.py`` and pytorch-metric-learning ``MarginLoss``.
Per pair: positive ``[d_ap - beta + margin]_+``, negative ``[beta - d_an + margin]_+``;
the sum over pairs plus ``nu * sum(beta)`` (one beta per positive pair: per triplet for a
triplet miner, the anchor's class beta) is divided by the number of non-zero pair terms
(``reduction="mean_nonzero"``, the reference's ``pair_count``). The default miner is the
paper's distance-weighted sampling (which assumes L2-normalised embeddings). Sample weights:
a pair (i, j) and its beta weigh w_i w_j, a pair from a mined triplet the triplet's w_a w_p w_n.

``learn_beta=True`` makes beta a trainable weight ``beta`` of shape [num_classes] (one per
class, labels must lie in [0, num_classes)) or [1] when ``num_classes`` is None. Its learning
rate is ``lr_multiplier`` times the network's: 50 by default, Revisiting-DML's
``--loss_margin_beta_lr 5e-4`` over ``--lr 1e-5``.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("margin", miner="all")
    >>> x = np.array([[0.0], [1.5], [0.5]], "float32")
    >>> round(float(loss(np.array([0, 0, 1]), x)), 4)  # pos 1.5-1.2+.2 = .5; neg .9 and .4; each twice
    0.6
"""
import keras
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss, reduction_count, safe_divide
from dmltf.miners.base import pair_lists


@register("margin")
class MarginLoss(PairLoss):
    default_miner = "distance_weighted"
    default_reduction = "mean_nonzero"
    lr_multiplier = 50.0

    def __init__(self, margin=0.2, beta=1.2, nu=0.0, learn_beta=False, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.beta_init = float(beta)
        self.nu = float(nu)
        self.learn_beta = bool(learn_beta)
        self.num_classes = None if num_classes is None else int(num_classes)
        if self.learn_beta:
            self.beta = self.add_weight(
                name="beta",
                shape=(self.num_classes or 1,),
                initializer=keras.initializers.Constant(self.beta_init),
                trainable=True,
            )

    def compute_loss(self, labels, embeddings, ref_labels, ref_embeddings, same_source, weights):
        mat, mined = self.mine(labels, embeddings, ref_labels, ref_embeddings, same_source, weights)
        (pos_d, pos_w, pos_rows), (neg_d, neg_w, neg_rows) = pair_lists(mat, mined)
        pos_beta, neg_beta = self._beta(labels, pos_rows), self._beta(labels, neg_rows)
        pos_term = ops.relu(self.margin + self.distance.margin(pos_beta, pos_d))
        neg_term = ops.relu(self.margin + self.distance.margin(neg_d, neg_beta))
        terms = ops.concatenate([pos_term, neg_term])
        term_weights = ops.concatenate([pos_w, neg_w])
        total = ops.sum(terms * term_weights) + self.nu * ops.sum(pos_beta * pos_w)
        return safe_divide(total, reduction_count(terms, term_weights, self.reduction)), None

    def _beta(self, labels, rows):
        if not self.learn_beta:
            return ops.full(ops.shape(rows), self.beta_init)
        if self.num_classes is None:
            return ops.take(ops.cast(self.beta, "float32"), ops.zeros_like(rows))
        return ops.take(ops.cast(self.beta, "float32"), ops.take(labels, rows))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "beta": self.beta_init, "nu": self.nu,
                "learn_beta": self.learn_beta, "num_classes": self.num_classes}
