"""The Method contract: what the trainer needs from a system, and the plain "backbone + one loss".

A method is a ``keras.Model`` with
- ``compute_losses(batch, training) -> dict`` of scalars: the total under ``"loss"`` plus named
  parts (logged to TensorBoard); extra totals (e.g. ``"decoder_loss"``) may drive other
  groups. Under a multi-replica strategy each value is this replica's share: summed over
  replicas it gives the global-batch value (see :func:`gather_global_batch`);
- ``optimizer_groups() -> [OptimizerGroup]``: which variables each optimizer updates, the
  loss key it minimises and its learning-rate multiplier;
- ``embed(images)``: the embedding evaluation and export use; ``embedding_model`` is the Keras
  model exported;
- ``on_epoch_begin(epoch)``: called by the trainer before each epoch (0-based), also after a
  resume, e.g. to switch a training phase; state that must survive a resume lives in variables.
The trainer knows no method by name. ``train_step`` makes ``model.fit`` work on one host.
"""
from dataclasses import dataclass, field

import keras
import tensorflow as tf
from keras import ops


@dataclass
class OptimizerGroup:
    """Variables updated by one optimizer, minimising ``losses[loss_key]``."""

    name: str
    variables: list
    loss_key: str = "loss"
    lr_multiplier: float = 1.0
    weight_decay: float | None = None  # None: the trainer's --weight_decay
    extra: dict = field(default_factory=dict)


def loss_weights_group(loss, loss_key="loss", weight_decay=None):
    """The ``loss`` group: a loss's own weights (proxies, centres, the margin loss's beta) at its
    ``lr_multiplier``; empty when it has none (methods drop groups without variables)."""
    return OptimizerGroup("loss", loss.trainable_variables, loss_key, lr_multiplier=loss.lr_multiplier,
                          weight_decay=weight_decay)


def gather_global_batch(labels, embeddings):
    """Under a multi-replica strategy, the whole global batch on every replica.

    ``all_gather`` has a gradient (each replica gets the slice of its own inputs, summed
    over replicas), so a loss computed on the gathered batch and divided by the number of
    replicas yields exactly the single-device gradient of the global-batch loss.
    Labels travel as an extra float32 column of the same collective (exact below 2^24):
    separate collectives of different dtypes can be ordered differently on each replica.
    Returns (labels, embeddings, num_replicas).
    """
    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync if ctx is not None else 1
    if n == 1:
        return labels, embeddings, 1
    dtype = embeddings.dtype
    packed = tf.concat([tf.cast(embeddings, tf.float32), tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)], axis=1)
    dim = embeddings.shape[-1]
    # all_gather drops the static shape; restore the width for shape-dependent losses and miners.
    gathered = tf.reshape(ctx.all_gather(packed, axis=0), [-1, dim + 1])
    return tf.cast(gathered[:, dim], labels.dtype), tf.cast(gathered[:, :dim], dtype), n


class Method(keras.Model):
    """Base class of every dmltf method (see the module docstring)."""

    def compute_losses(self, batch, training=True):
        raise NotImplementedError

    def optimizer_groups(self):
        raise NotImplementedError

    def embed(self, images):
        return self.embedding_model(images, training=False)

    def call(self, images, training=False):
        return self.embedding_model(images, training=training)

    def on_epoch_begin(self, epoch):
        """Hook before each training epoch; nothing by default."""

    def loss_layers(self):
        """Losses whose statistics the trainer may log; empty by default."""
        return []

    def train_step(self, data):
        """For ``model.fit`` on one host: one optimizer, all groups' losses under ``"loss"``."""
        with tf.GradientTape() as tape:
            losses = self.compute_losses(data, training=True)
        variables = [v for g in self.optimizer_groups() for v in g.variables]
        grads = tape.gradient(losses["loss"], variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {k: v for k, v in losses.items() if ops.ndim(v) == 0}


@keras.saving.register_keras_serializable(package="dmltf")
class MetricLearner(Method):
    """An embedding model trained with one metric loss (any ``dmltf.losses`` loss).

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
        labels, embeddings, replicas = gather_global_batch(labels, embeddings)
        loss = self.loss_fn(labels, embeddings) / replicas
        return {"loss": loss}

    def optimizer_groups(self):
        backbone = self.embedding_model.get_layer("backbone")
        backbone_ids = {id(v) for v in backbone.trainable_variables}
        head = [v for v in self.embedding_model.trainable_variables if id(v) not in backbone_ids]
        groups = [OptimizerGroup("backbone", backbone.trainable_variables), OptimizerGroup("head", head),
                  loss_weights_group(self.loss_fn)]
        return [g for g in groups if g.variables]

    def loss_layers(self):
        return [self.loss_fn]
