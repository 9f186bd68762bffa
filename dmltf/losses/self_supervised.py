"""Self-supervised wrapper: two views of the same inputs are each other's positives.

Reference: pytorch-metric-learning 2.9 ``SelfSupervisedLoss`` (SimCLR-style training; Chen et
al. 2020). Called as ``loss(labels, embeddings, ref_embeddings=view2)`` with row i of both
views coming from input i; ``labels`` are not used (each row is its own class, as PML's
``arange``), nor is ``ref_labels``. ``symmetric=True`` (PML's default) computes the wrapped loss
on the 2B embeddings of both views with labels (0..B-1, 0..B-1); ``symmetric=False`` uses the
first view as queries and the second as references. Default wrapped loss: ``ntxent`` (PML
lists the supported ones: angular, circle, contrastive, generalized_lifted_structure,
intra_pair_variance, lifted_structure, multi_similarity, nca, ntxent, snr_contrastive,
supcon, triplet, tuplet_margin; any pair loss works here).

Sample weights weigh the rows (input i's weight is both of its views'); with
``symmetric=False`` a zero-weight row's second view is removed from the references and the
others weigh 1 (references are unweighted in the loss contract).

Not in the loss registry, so there is no ``--loss=self_supervised``: the trainer's batches
hold one view per sample, and every registered loss must accept any references. It is still a
Keras-serialisable ``MetricLoss``, for custom training loops.

Example:
    >>> import numpy as np
    >>> from dmltf.losses.self_supervised import SelfSupervisedLoss
    >>> x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    >>> loss = SelfSupervisedLoss("ntxent")
    >>> float(loss(None, x, ref_embeddings=x + 0.01)) < float(loss(None, x, ref_embeddings=x[::-1]))
    True
"""
import keras
import tensorflow as tf
from keras import ops

from dmltf import losses as losses_lib
from dmltf.losses.base import MetricLoss, ProxyLoss


@keras.saving.register_keras_serializable(package="dmltf", name="self_supervised")
class SelfSupervisedLoss(MetricLoss):
    registry_name = "self_supervised"

    def __init__(self, loss="ntxent", symmetric=True, **kwargs):
        self.loss = losses_lib.get(loss)
        if isinstance(self.loss, ProxyLoss):
            raise ValueError(f"self_supervised wraps a pair-based loss; {type(self.loss).__name__} uses class labels")
        kwargs.setdefault("lr_multiplier", self.loss.lr_multiplier)
        super().__init__(**kwargs)
        self.symmetric = bool(symmetric)

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None):
        if ref_embeddings is None:
            raise ValueError("self_supervised needs the second view as ref_embeddings")
        embeddings, ref_embeddings = ops.cast(embeddings, "float32"), ops.cast(ref_embeddings, "float32")
        ids = ops.arange(ops.shape(embeddings)[0], dtype="int32")
        if self.symmetric:
            both = ops.concatenate([embeddings, ref_embeddings], axis=0)
            weight = None if sample_weight is None else ops.tile(ops.reshape(sample_weight, (-1,)), 2)
            return self.loss(ops.tile(ids, 2), both, sample_weight=weight)
        if sample_weight is None:
            return self.loss(ids, embeddings, ids, ref_embeddings)
        kept = ops.reshape(sample_weight, (-1,)) > 0
        kept_loss = lambda: self.loss(ids, embeddings, tf.boolean_mask(ids, kept),  # noqa: E731
                                      tf.boolean_mask(ref_embeddings, kept), sample_weight=sample_weight)
        return ops.cond(ops.any(kept), kept_loss, lambda: ops.zeros(()))  # no reference is left: 0

    def get_config(self):
        return {**super().get_config(), "loss": keras.saving.serialize_keras_object(self.loss),
                "symmetric": self.symmetric}
