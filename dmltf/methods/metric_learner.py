"""The plain system: a backbone + pooling + embedding head trained with one metric loss.

It is a ``keras.Model``: compile it with an optimizer (no ``loss=``: the loss is its own) and
``fit`` it on (images, labels). Each optimizer group (backbone, head, the loss's proxies)
trains at the compiled rate times its multiplier (proxies at the loss's ``lr_multiplier``,
100x for proxy losses); ``validation_data`` logs ``val_loss``,
:class:`dmltf.callbacks.RetrievalEvaluation` retrieval metrics; ``save`` / ``keras.models.load_model``
round-trip it with the loss's weights (``learner.embedding_model`` alone is the model to export).

Example:
    >>> import numpy as np, keras
    >>> from dmltf import losses
    >>> from dmltf.methods import MetricLearner
    >>> from dmltf.models import build_embedding_model
    >>> x = np.random.default_rng(0).random((12, 8, 8, 1), "float32")
    >>> y = np.arange(12) % 3
    >>> model = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=4)
    >>> learner = MetricLearner(model, losses.get("proxy_anchor", num_classes=3, embedding_dim=4))
    >>> learner.compile(optimizer=keras.optimizers.SGD(0.01))
    >>> history = learner.fit(x, y, batch_size=6, verbose=0)  # validation_data=(x_val, y_val) logs val_loss
    >>> sorted(history.history), learner.embed(x[:2]).shape
    (['loss'], TensorShape([2, 4]))
    >>> sorted(learner.compute_losses((x[:4], y[:4])))
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
        self.built = True  # its state is its parts': saving needs no call first

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

    def get_config(self):
        return {**super().get_config(), "embedding_model": keras.saving.serialize_keras_object(self.embedding_model),
                "loss": keras.saving.serialize_keras_object(self.loss_fn)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        embedding_model = keras.saving.deserialize_keras_object(config.pop("embedding_model"))
        return cls(embedding_model, keras.saving.deserialize_keras_object(config.pop("loss")), **config)

    def compile_from_config(self, config):
        # load_model's compile: the compiled optimizer only counts steps (each group trains with a copy,
        # see Method.train_step), so it is not built on the variables, as when it was saved.
        self.compile(**keras.saving.deserialize_keras_object(config))

    @classmethod
    def from_parts(cls, parts):
        embedding_model = parts.embedding_model()
        return cls(embedding_model, parts.loss(embedding_dim=embedding_model.output_shape[-1]))
