"""VICReg: variance-invariance-covariance regularisation of two views (self-supervised).

Reference: Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization
for Self-Supervised Learning" (ICLR); parameters and reduction as pytorch-metric-learning 2.9
``VICRegLoss``. For two views Z, Z' [B, D] of the same B inputs (row i of both from input i):

    L = lambda s(Z, Z') + mu (v(Z) + v(Z')) + nu (c(Z) + c(Z'))
    s = mean_i mean_d (z_id - z'_id)^2
    v(Z) = mean_d relu(1 - sqrt(Var_d(Z) + eps)) / 2        (unbiased variance over the batch)
    c(Z) = sum_{d != e} Cov(Z)_de^2 / D                       (unbiased covariance)

Defaults: invariance_lambda 25, variance_mu 25, covariance_v 1, eps 1e-4 (the paper's and PML's).
Memory O(B D + D^2).

Called as ``loss(labels, embeddings, ref_embeddings=view2)``; labels are not used. Sample
weights weigh the rows (input i's weight is both of its views'): the means, variances and
covariances are frequency-weighted (the unbiased ones divide by sum w - 1; below 2 samples'
weight the variance and covariance terms are 0), so 0/1 weights give the loss of the kept rows.

Not in the loss registry (no ``--loss=vicreg``), as ``self_supervised``: the trainer's batches
hold one view per sample. It is a Keras-serialisable ``MetricLoss`` for custom training loops.
Deviation: none in the formula; a batch of one row (PML: NaN from the unbiased variance) gives
the invariance term only.

Example:
    >>> import numpy as np
    >>> from dmltf.losses.vicreg import VICRegLoss
    >>> z = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> loss = VICRegLoss()
    >>> float(loss(None, z, ref_embeddings=z + 0.01)) < float(loss(None, z, ref_embeddings=z[::-1]))
    True
"""
import keras
from keras import ops

from dmltf.losses.base import MetricLoss, safe_divide


@keras.saving.register_keras_serializable(package="dmltf", name="vicreg")
class VICRegLoss(MetricLoss):
    registry_name = "vicreg"

    def __init__(self, invariance_lambda=25.0, variance_mu=25.0, covariance_v=1.0, eps=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.invariance_lambda, self.variance_mu = float(invariance_lambda), float(variance_mu)
        self.covariance_v, self.eps = float(covariance_v), float(eps)

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None):
        if ref_embeddings is None:
            raise ValueError("vicreg needs the second view as ref_embeddings")
        z, z2 = ops.cast(embeddings, "float32"), ops.cast(ref_embeddings, "float32")
        if sample_weight is None:
            w = ops.ones((ops.shape(z)[0],), "float32")
        else:
            w = ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        total = ops.sum(w)
        row_w = ops.expand_dims(w, 1)
        invariance = safe_divide(ops.sum(row_w * ops.mean(ops.square(z - z2), axis=1, keepdims=True)), total)
        spread = total - 1.0
        usable = spread > 0

        def variance_and_covariance(v):
            centred = v - safe_divide(ops.sum(row_w * v, axis=0, keepdims=True), total)
            centred = ops.where(row_w > 0, centred, 0.0)
            cov = ops.matmul(ops.transpose(centred * row_w), centred) / ops.where(usable, spread, 1.0)
            dim = ops.shape(v)[1]
            variance = ops.mean(ops.relu(1.0 - ops.sqrt(ops.diagonal(cov) + self.eps)) / 2.0)
            off_diagonal = ops.sum(ops.square(cov * (1.0 - ops.eye(dim)))) / ops.cast(dim, "float32")
            return ops.where(usable, variance, 0.0), ops.where(usable, off_diagonal, 0.0)

        var1, cov1 = variance_and_covariance(z)
        var2, cov2 = variance_and_covariance(z2)
        return (self.invariance_lambda * invariance + self.variance_mu * (var1 + var2)
                + self.covariance_v * (cov1 + cov2))

    def get_config(self):
        return {**super().get_config(), "invariance_lambda": self.invariance_lambda,
                "variance_mu": self.variance_mu, "covariance_v": self.covariance_v, "eps": self.eps}
