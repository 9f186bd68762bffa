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
``symmetric=False`` a zero-weight row's second view is removed from the references
(``ref_sample_weight`` 0) and the others weigh 1.

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
from keras import ops

from dmltf import losses as losses_lib
from dmltf.losses.base import MetricLoss, ProxyLoss


@keras.saving.register_keras_serializable(package="dmltf", name="self_supervised")
class SelfSupervisedLoss(MetricLoss):
    registry_name = "self_supervised"

    def __init__(self, loss="ntxent", symmetric=True, **kwargs):
        wrapped = losses_lib.get(loss)
        if isinstance(wrapped, ProxyLoss):
            raise ValueError(f"self_supervised wraps a pair-based loss; {type(wrapped).__name__} uses class labels")
        kwargs.setdefault("lr_multiplier", wrapped.lr_multiplier)
        super().__init__(**kwargs)
        self.loss = wrapped  # after Layer.__init__: on PyTorch a layer is a torch Module
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
        # A dropped sample's second view leaves the references too; the kept ones weigh 1.
        kept = ops.cast(ops.reshape(sample_weight, (-1,)) > 0, "float32")
        return self.loss(ids, embeddings, ids, ref_embeddings, sample_weight=sample_weight, ref_sample_weight=kept)

    def get_config(self):
        return {**super().get_config(), "loss": keras.saving.serialize_keras_object(self.loss),
                "symmetric": self.symmetric}
