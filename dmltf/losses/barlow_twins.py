"""Barlow Twins: the cross-correlation of two views pushed towards the identity (self-supervised).

Reference: Zbontar, Jing, Misra, LeCun & Deny 2021, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction" (ICML); parameters and reduction as TensorFlow Similarity 0.17 ``Barlow``.
For two views Z, Z' [B, D] of the same B inputs, each column standardised over the batch
(population standard deviation; a constant column becomes 0, TFSim's ``divide_no_nan``), the
cross-correlation is ``C = Z^T Z' / B`` [D, D] and

    L = sum_d (1 - C_dd)^2 + lambda_ sum_{d != e} C_de^2

Defaults: ``lambda_`` 5e-3 (the paper's and TFSim's, TFSim's name). Memory O(B D + D^2).

Called as ``loss(labels, embeddings, ref_embeddings=view2)``; labels are not used. Sample weights
weigh the rows (input i's weight is both of its views'): the column means, deviations and C are
weighted averages, so 0/1 weights give the loss of the kept rows; all-zero weights give 0.

Not in the loss registry (no ``--loss=barlow_twins``), as ``self_supervised`` and ``vicreg``: the
trainer's batches hold one view per sample. It is a Keras-serialisable ``MetricLoss``.
Deviation: TFSim adds a constant ``margin`` of 1e-12 to the loss; it is left out (no gradient).

Example:
    >>> import numpy as np
    >>> from dmltf.losses.barlow_twins import BarlowTwinsLoss
    >>> z = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> loss = BarlowTwinsLoss()
    >>> float(loss(None, z, ref_embeddings=z + 0.01)) < float(loss(None, z, ref_embeddings=z[::-1]))
    True
"""
import keras
from keras import ops

from dmltf.losses.base import MetricLoss, safe_divide


@keras.saving.register_keras_serializable(package="dmltf", name="barlow_twins")
class BarlowTwinsLoss(MetricLoss):
    registry_name = "barlow_twins"

    def __init__(self, lambda_=5e-3, **kwargs):
        super().__init__(**kwargs)
        self.lambda_ = float(lambda_)

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None):
        if ref_embeddings is None:
            raise ValueError("barlow_twins needs the second view as ref_embeddings")
        z, z2 = ops.cast(embeddings, "float32"), ops.cast(ref_embeddings, "float32")
        if sample_weight is None:
            w = ops.ones((ops.shape(z)[0],), "float32")
        else:
            w = ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        total = ops.sum(w)
        row_w = ops.expand_dims(w, 1)
        kept = row_w > 0
        average = lambda v: safe_divide(ops.sum(row_w * v, axis=0, keepdims=True), total)  # noqa: E731

        def standardise(v):
            centred = ops.where(kept, v - average(v), 0.0)
            variance = average(ops.square(centred))
            positive = variance > 0
            std = ops.sqrt(ops.where(positive, variance, 1.0))
            return ops.where(ops.logical_and(kept, positive), centred / std, 0.0)

        za, zb = standardise(z), standardise(z2)
        corr = safe_divide(ops.matmul(ops.transpose(za * row_w), zb), total)
        on_diagonal = ops.sum(ops.square(1.0 - ops.diagonal(corr)))
        off_diagonal = ops.sum(ops.square(corr * (1.0 - ops.eye(ops.shape(corr)[0]))))
        return ops.where(total > 0, on_diagonal + self.lambda_ * off_diagonal, 0.0)

    def get_config(self):
        return {**super().get_config(), "lambda_": self.lambda_}
