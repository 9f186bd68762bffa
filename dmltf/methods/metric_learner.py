"""The plain system: a backbone + pooling + embedding head trained with one metric loss.

Example:
    >>> import numpy as np
    >>> from dmltf import losses
    >>> from dmltf.methods import MetricLearner
    >>> from dmltf.models import build_embedding_model
    >>> model = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=4)
    >>> learner = MetricLearner(model, losses.get("contrastive"))
    >>> out = learner.compute_losses((np.random.rand(4, 8, 8, 1).astype("float32"), np.array([0, 0, 1, 1])))
    >>> sorted(out)
    ['loss']
"""
import keras

from dmltf import methods
from dmltf.methods.base import Method, OptimizerGroup, gather_global_batch, loss_weights_group


@methods.register("metric_learner")
@keras.saving.register_keras_serializable(package="dmltf")
class MetricLearner(Method):
    """An embedding model trained with one metric loss (any ``dmltf.losses`` loss); a loss of
    several parts (``multiple_losses``, a loss with regularizers: ``loss/main``,
    ``loss/embedding_reg``, ``loss/weight_reg``) also has each weighted part logged, as ``loss/<part>``.

    Groups: ``backbone`` (the trunk), ``head`` (pooling + embedding head), ``loss`` (the
    loss's own weights: proxies, centres, beta) at the loss's ``lr_multiplier``.
    """

    def __init__(self, embedding_model, loss, **kwargs):
        super().__init__(**kwargs)
        self.embedding_model = embedding_model
        self.loss_fn = loss

    def compute_losses(self, batch, training=True):
        images, labels = batch
        embeddings = self.embedding_model(images, training=training)
        labels, embeddings = gather_global_batch(labels, embeddings)
        if not getattr(self.loss_fn, "logs_parts", False):  # one part: nothing more to log
            return {"loss": self.loss_fn(labels, embeddings)}
        values = self.loss_fn.parts(labels, embeddings)
        return {"loss": sum(values.values()), **{f"loss/{name}": v for name, v in values.items()}}

    def optimizer_groups(self):
        backbone = self.embedding_model.get_layer("backbone")
        backbone_ids = {id(v) for v in backbone.trainable_variables}
        head = [v for v in self.embedding_model.trainable_variables if id(v) not in backbone_ids]
        groups = [OptimizerGroup("backbone", backbone.trainable_variables), OptimizerGroup("head", head),
                  loss_weights_group(self.loss_fn)]
        return [g for g in groups if g.variables]

    def loss_layers(self):
        return [self.loss_fn]

    @classmethod
    def from_parts(cls, parts):
        embedding_model = parts.embedding_model()
        return cls(embedding_model, parts.loss(embedding_dim=embedding_model.output_shape[-1]))
