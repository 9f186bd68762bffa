"""The Method contract: what the trainer needs from a system, and the plain "backbone + one loss".

A method is a ``keras.Model`` with
- ``compute_losses(batch, training) -> dict`` of scalars: the total under ``"loss"`` plus named
  parts (logged to TensorBoard); extra totals (e.g. ``"decoder_loss"``) may drive other
  groups. A vector value is a per-sample quantity (LM-Metric's pair weights): the trainer logs
  the histogram of an epoch's values under ``train/<name>``. Each value is the global batch's, also under a multi-replica strategy (gather the
  batch with :func:`gather_global_batch`); the trainer handles the replica count;
- ``optimizer_groups() -> [OptimizerGroup]``: which variables each optimizer updates, the
  loss key it minimises and its learning-rate multiplier;
- ``embed(images)``: the embedding evaluation and export use; ``embedding_model`` is the Keras
  model exported;
- ``on_epoch_begin(epoch)``: called by the trainer before each epoch (0-based), also after a
  resume, e.g. to switch a training phase; state that must survive a resume lives in variables.
The trainer knows no method by name. ``train_step`` and ``test_step`` make ``model.fit`` (with
``validation_data``: ``val_loss``) and ``model.evaluate`` work on one host, logging each scalar
loss's mean over the epoch's batches.

How a method comes from the command line (``dmltf.training.builders`` does it for every
method alike): a method registers its class (``@methods.register("name")``); the plain-valued
parameters of its constructor are its flags ``--<name>_<param>`` (help from ``flag_help``);
``from_parts(parts, **hyperparameters)`` builds it from :class:`Parts` (the dataset's
description, the backbone options, and ``parts.loss(role)``, the one resolution point for
losses); ``loss_roles`` declares further configured loss copies beyond the main ``--loss``,
each with the main loss's whole flag set under the prefix ``--<name>_<role>_`` and its own
defaults; ``default_sampler`` is the batch sampler used when ``--batch_sampler`` is empty.
"""
import collections
import contextlib
import types
import weakref
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


def loss_weights_group(loss, loss_key="loss", weight_decay=None, name="loss"):
    """The group of a loss's own weights (proxies, centres, the margin loss's beta) at its
    ``lr_multiplier``; empty when it has none (methods drop groups without variables)."""
    return OptimizerGroup(name, loss.trainable_variables, loss_key, lr_multiplier=loss.lr_multiplier,
                          weight_decay=weight_decay)


@dataclass(frozen=True)
class LossRole:
    """A further configured loss of a method (see the module docstring).

    ``defaults`` overrides the main loss's flag defaults for this role, keyed by the main
    flag's name (``{"loss": "proxy_anchor", "proxy_initializer": "kaiming_normal"}``).
    """

    help: str
    defaults: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Parts:
    """What a method is built from: plain values and the loss resolution point.

    ``make_loss(role, embedding_dim)`` builds a new configured loss (``role`` None: the main
    ``--loss``) for embeddings of that width; each call gives an independent copy.
    """

    num_classes: int
    input_shape: tuple
    seed: int
    backbone: str
    backbone_weights: str | None
    pooling: str
    embedding_dim: int
    embedding_bn: bool
    l2_normalize: bool
    freeze_bn: bool
    sync_batchnorm: bool
    make_loss: object

    def loss(self, role=None, *, embedding_dim=None):
        return self.make_loss(role, self.embedding_dim if embedding_dim is None else embedding_dim)

    def feature_model(self):
        """backbone -> pooling (no head): the trunk feature a method builds its own head on."""
        from dmltf.models import build_embedding_model

        return build_embedding_model(self.backbone, self.input_shape, pooling=self.pooling, embedding_dim=0,
                                     l2_normalize=False, backbone_weights=self.backbone_weights,
                                     freeze_bn=self.freeze_bn)

    def embedding_model(self):
        """backbone -> pooling -> embedding head, as the flags describe."""
        from dmltf.models import build_embedding_model

        return build_embedding_model(self.backbone, self.input_shape, pooling=self.pooling,
                                     embedding_dim=self.embedding_dim, embedding_bn=self.embedding_bn,
                                     l2_normalize=self.l2_normalize, backbone_weights=self.backbone_weights,
                                     freeze_bn=self.freeze_bn)


LOSS_SCOPES = ("global", "replica")
# Process-wide, not per thread: MirroredStrategy runs (and traces) each replica in its own thread.
_scope = types.SimpleNamespace(value="global")


@contextlib.contextmanager
def loss_scope(scope):
    """Within it (at trace time), :func:`gather_global_batch` gathers the global batch
    (``"global"``, the default) or keeps each replica's own share (``"replica"``: each replica's
    loss is its share's, as PaddlePaddle computes a loss per GPU sub-batch; the trainer then
    averages the replicas' losses and gradients)."""
    if scope not in LOSS_SCOPES:
        raise ValueError(f"--loss_scope must be one of {', '.join(LOSS_SCOPES)}, got {scope!r}")
    previous, _scope.value = _scope.value, scope
    try:
        yield
    finally:
        _scope.value = previous


def gather_global_batch(labels, embeddings):
    """Under a multi-replica strategy, the whole global batch on every replica (within
    ``loss_scope("replica")``, the replica's own share, unchanged).

    ``all_gather`` has a gradient (each replica gets the slice of its own inputs, summed
    over replicas), so a loss computed on the gathered batch is the global-batch loss on every
    replica, and the trainer's 1/N share of it per replica yields exactly the single-device
    gradient. Labels travel as an extra float32 column of the same collective (exact below
    2^24): separate collectives of different dtypes can be ordered differently on each replica,
    so a method gathers its other per-sample values as further embedding columns too.
    Returns (labels, embeddings).
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1 or _scope.value == "replica":
        return labels, embeddings
    dtype = embeddings.dtype
    packed = tf.concat([tf.cast(embeddings, tf.float32), tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)], axis=1)
    dim = embeddings.shape[-1]
    # all_gather drops the static shape; restore the width for shape-dependent losses and miners.
    gathered = tf.reshape(ctx.all_gather(packed, axis=0), [-1, dim + 1])
    return tf.cast(gathered[:, dim], labels.dtype), tf.cast(gathered[:, :dim], dtype)


class Method(keras.Model):
    """Base class of every dmltf method (see the module docstring)."""

    default_sampler = "balanced"
    loss_roles = {}  # role -> LossRole, beyond the main --loss
    flag_help = {}  # hyper-parameter -> help text of its flag

    @classmethod
    def from_parts(cls, parts, **hyperparameters):
        raise NotImplementedError

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
        """For ``model.fit`` on one host: every optimizer group minimises ``losses[loss_key]`` with
        its own copy of the compiled optimizer, at the compiled rate x its ``lr_multiplier``
        (proxies at their 100x with any optimizer: a gradient scale would be right for SGD only)."""
        groups = self.optimizer_groups()
        optimizers = self._group_optimizers(groups)
        # Each loss-scaling copy has its own scale, so each group then gets its own pass.
        scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        keys = [g.name if scaled else g.loss_key for g in groups]
        with tf.GradientTape(persistent=True) as tape:
            losses = self.compute_losses(data, training=True)
            targets = {k: optimizers[g.name].scale_loss(losses[g.loss_key]) for k, g in zip(keys, groups)}
        grads = gradients_by_target(tape, targets, [(k, g.variables) for k, g in zip(keys, groups)])
        del tape
        rate = self.optimizer.learning_rate
        for g, group_grads in zip(groups, grads):
            optimizers[g.name].learning_rate = rate * g.lr_multiplier
            optimizers[g.name].apply_gradients(zip(group_grads, g.variables))
        # The compiled optimizer applies nothing; counting the steps keeps its schedule and callbacks right.
        self.optimizer.iterations.assign_add(1)
        return self._logged_means(losses, data)

    def test_step(self, data):
        """For ``model.evaluate`` and ``fit``'s ``validation_data``: the losses with ``training=False``."""
        return self._logged_means(self.compute_losses(data, training=False), data)

    @property
    def metrics(self):
        # fit and evaluate reset these at each epoch's start and log their results.
        return [*super().metrics, *self._loss_part_means().values()]

    def _logged_means(self, losses, data):
        """The step's scalar losses as ``fit`` / ``evaluate`` log them: the running mean of each over
        the epoch's batches, weighted by batch size as Keras' compiled loss tracker (which holds
        ``"loss"``; the other keys get a ``keras.metrics.Mean`` of their own at their first step)."""
        scalars = {k: v for k, v in losses.items() if ops.ndim(v) == 0}
        means = self._loss_part_means()
        with tf.init_scope():  # made at trace time: the metric variables live outside the step function
            for key in scalars.keys() - means.keys() - {"loss"}:
                means[key] = keras.metrics.Mean(name=key)
        batch_size = tf.shape(tf.nest.flatten(data)[0])[0]
        logged = {}
        for key, value in scalars.items():
            tracker = self._loss_tracker if key == "loss" else means[key]
            tracker.update_state(value, sample_weight=batch_size)
            logged[key] = tracker.result()
        return logged

    def _loss_part_means(self):
        """{loss key: its Mean}: in a plain holder, so that neither Keras nor a checkpoint tracks them."""
        holder = getattr(self, "_loss_part_holder", None)
        if holder is None:
            holder = self._loss_part_holder = types.SimpleNamespace(means={})
        return holder.means

    def _group_optimizers(self, groups):
        """{group name: its copy of the compiled optimizer}, made on the first step after each
        ``compile`` (outside the traced step)."""
        made_for = getattr(self, "_group_optimizers_for", None)
        if made_for is None or made_for() is not self.optimizer:
            # A tf.Module holds them: Keras collections are not checkpoint dependencies, and a
            # checkpoint of the method (restored before the first step too) must hold them.
            holder = tf.Module(name="group_optimizers")
            with tf.init_scope():
                holder.by_name = {g.name: _optimizer_copy(self.optimizer, g) for g in groups}
            self._group_optimizer_holder = holder
            self._group_optimizers_for = weakref.ref(self.optimizer)
        return self._group_optimizer_holder.by_name


def _optimizer_copy(optimizer, group):
    """``optimizer``'s configuration for ``group``, built for its variables: a settable rate (set
    every step), the group's own weight decay if it has one, the same loss scaling."""
    scaler = optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None
    inner = scaler.inner_optimizer if scaler else optimizer
    config = {**inner.get_config(), "learning_rate": 0.0, "name": f"{inner.name}_{group.name}"}
    if group.weight_decay is not None:
        config["weight_decay"] = group.weight_decay
    copy = type(inner).from_config(config)
    if scaler:
        copy = keras.optimizers.LossScaleOptimizer(copy, scaler.initial_scale, scaler.dynamic_growth_steps,
                                                   name=f"{scaler.name}_{group.name}")
    copy.build(group.variables)
    return copy


def gradients_by_target(tape, targets, requests):
    """The gradients of each ``(target key, variables)`` request from a persistent ``tape``, one
    backward pass per key: requests that share a key (groups minimising the same loss) share it."""
    by_key = collections.defaultdict(list)
    for i, (key, _) in enumerate(requests):
        by_key[key].append(i)
    grads = [None] * len(requests)
    for key, indices in by_key.items():
        flat = tape.gradient(targets[key], [v for i in indices for v in requests[i][1]])
        for i in indices:
            n = len(requests[i][1])
            grads[i], flat = flat[:n], flat[n:]
    return grads
