"""The distributed trainer: one custom loop (``strategy.run`` + ``GradientTape``) that runs
unchanged under the default strategy, ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``.

Per step, every active optimizer group gets the gradient of ``losses[group.loss_key]`` for its
variables (one backward pass per loss key). Warm-up epochs train only ``--warmup_groups``.
Each replica receives its contiguous share of the sampler's global batch (whole class groups),
and methods gather the global batch for the loss (``dmltf.methods.gather_global_batch``), so
every replica computes the global-batch values; the trainer divides each replica's gradient
target by the replica count (the optimizers sum the replicas' gradients) and reports the
replicas' mean, so N replicas compute and log what one device does. Methods never see the
replica count.

Checkpoints hold the method (model, loss weights, RNG states), every optimizer, the epoch and
the step; with the (seed, epoch)-deterministic input pipeline, ``--resume`` after a kill
continues exactly where the run stopped (at the start of the epoch it was in).

Runs count iterations too: ``--max_steps`` ends the run after that many (the last epoch may be
partial), the rate is set before every step from the global step (``--schedule=piecewise``
decays at iterations), and ``--eval_every_steps`` evaluates between epochs' ends as well (the
evaluations of such a run are then logged at the global step, not the epoch). ``--init_from``
starts the embedding model from an earlier run's weights, with fresh losses and optimizers.
"""
import collections
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from dmltf import data, evaluation
from dmltf.data.images import decode_jpeg
from dmltf.distances import l2_normalize
from dmltf.methods.base import gradients_by_target
from dmltf.training import summaries
from dmltf.training.optim import GroupOptimizer


def make_strategy(name):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; valid: default, mirrored, multi_worker")


def distribute_batches(strategy, make_dataset, global_batch):
    """Global P x K batches -> each replica's contiguous share (whole class groups per replica).

    ``make_dataset(shard)`` returns the global batches (``shard=None``) or, per input pipeline
    (one per worker), only that worker's contiguous share ``shard=(index, count)``.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make_dataset(None)
    if global_batch % replicas:
        raise ValueError(f"global batch {global_batch} is not divisible by {replicas} replicas")
    per_replica = global_batch // replicas

    def dataset_fn(ctx):
        local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        shard = (ctx.input_pipeline_id, ctx.num_input_pipelines) if ctx.num_input_pipelines > 1 else None

        def shares(images, labels):  # a worker's share -> one element per local replica, in order
            split = lambda t: tf.reshape(t, [local, per_replica, *t.shape[1:]])
            return tf.data.Dataset.from_tensor_slices((split(images), split(labels)))

        return make_dataset(shard).flat_map(shares)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def embed_split(method, split, cfg, preprocessing):
    """Embeddings and labels of a whole split, in file order."""
    return embed_batches(_compiled_embed(method), split, cfg.eval_batch_size, augmentation=cfg.augmentation,
                         preprocessing=preprocessing, image_size=cfg.image_size or None)


def embed_batches(embed_fn, split, batch_size, *, augmentation, preprocessing, image_size):
    """float32 embeddings and labels of ``split`` through ``embed_fn``, with its eval transform."""
    ds = data.eval_dataset(split, batch_size, augmentation=augmentation, preprocessing=preprocessing,
                           image_size=image_size)
    outs, labels = [], []
    for images, y in ds:
        outs.append(tf.cast(embed_fn(images), tf.float32).numpy())
        labels.append(y.numpy())
    return np.concatenate(outs), np.concatenate(labels)


def split_images(split, size=64):
    """``fetch(indices) -> uint8 [n, H, W, C]``: only the rows asked for (the TensorBoard grid
    and sprite need a few, not the whole split); JPEG rows, which may differ in size, are
    decoded and resized to ``size`` x ``size``."""
    def fetch(indices):
        rows = split.read_rows(np.asarray(indices, np.int64))
        if split.encoding == "raw":
            return rows
        channels = split.image_shape[-1] if split.image_shape else 3
        return np.stack([tf.cast(tf.image.resize(decode_jpeg(bytes(b), channels), (size, size)), tf.uint8).numpy()
                         for b in rows])

    return fetch


def _compiled_embed(method):
    """One traced ``embed`` per method (a batch dimension of any size)."""
    if not hasattr(method, "_dmltf_embed_fn"):
        method._dmltf_embed_fn = tf.function(method.embed, reduce_retracing=True)
    return method._dmltf_embed_fn


def evaluate_embeddings(embeddings, labels, cfg):
    if cfg.eval_l2_normalize:
        embeddings = keras.ops.convert_to_numpy(l2_normalize(embeddings))
    return evaluation.evaluate(embeddings, labels, metrics=tuple(cfg.eval_metrics), distance=cfg.eval_distance,
                               seed=cfg.seed)


class Trainer:
    """Trains ``build_method()`` on ``train_split`` and evaluates on ``eval_split``.

    ``build_method`` is called inside the strategy scope; ``preprocessing`` is the input
    normalisation name (the backbone's unless overridden by flag).
    """

    def __init__(self, cfg, build_method, train_split, eval_split=None, *, sampler, preprocessing="none",
                 strategy=None):
        self.cfg, self.train_split, self.eval_split, self.preprocessing = cfg, train_split, eval_split, preprocessing
        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief = _is_chief(self.strategy)
        # Every worker saves (saving is collective); only the chief's files are the run's.
        self.logdir = cfg.logdir if self.is_chief else os.path.join(cfg.logdir, "workers", str(_task_id(self.strategy)))
        self.sampler = sampler
        sampler.check(train_split, self.strategy.num_replicas_in_sync)
        self.global_batch = sampler.batch_size
        self.steps_per_epoch = sampler.steps_per_epoch(train_split)
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        with self.strategy.scope():
            self.method = build_method()
            self.groups = [GroupOptimizer(g, cfg) for g in self.method.optimizer_groups()]
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(
            method=self.method, epoch=self.epoch, step=self.step,
            **{f"optimizer_{g.name}": g.optimizer for g in self.groups},
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(self.logdir, "checkpoints"), max_to_keep=2)
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(self.logdir, "best"), max_to_keep=1)
        self.writer = tf.summary.create_file_writer(self.logdir)
        self._step_fns = {}
        self.history = []
        self._best = -np.inf  # of --best_metric, among this trainer's evaluations
        if cfg.init_from:
            self._init_from(cfg.init_from)

    # -- one training step -------------------------------------------------------------
    def _active(self, epoch):
        if epoch < self.cfg.warmup_epochs:
            return tuple(g for g in self.groups if g.name in self.cfg.warmup_groups)
        return tuple(self.groups)

    def _step_fn(self, active):
        key = tuple(g.name for g in active)
        if key not in self._step_fns:
            scaled = self.cfg.precision == "mixed_float16"
            replicas = self.strategy.num_replicas_in_sync
            # One backward pass per loss key; under float16 loss scaling each group's optimizer
            # has its own scale, so each group gets its own pass.
            keys = [g.name if scaled else g.loss_key for g in active]

            def replica_step(batch):
                with tf.GradientTape(persistent=True) as tape:
                    losses = self.method.compute_losses(batch, training=True)
                    # Each replica holds the global-batch value; the optimizers sum the replicas'
                    # gradients, so each replica contributes 1/N of it.
                    targets = {k: g.optimizer.scale_loss(losses[g.loss_key] / replicas) for k, g in zip(keys, active)}
                grads = gradients_by_target(tape, targets, [(k, g.group.variables) for k, g in zip(keys, active)])
                del tape
                for g, group_grads in zip(active, grads):
                    g.apply(group_grads)
                return losses

            def step(dist_batch):
                per_replica = self.strategy.run(replica_step, args=(dist_batch,))
                self.step.assign_add(1)
                return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

            self._step_fns[key] = tf.function(step)
        return self._step_fns[key]

    # -- the loop -----------------------------------------------------------------------
    def restore(self):
        """Continue from the latest checkpoint, if any; returns the epoch to start from."""
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def _init_from(self, source):
        """The embedding weights of an earlier run (:func:`load_embedding_weights`), unless
        ``--resume`` continues this one. Called on construction: a wrong source fails before training."""
        if self.cfg.resume and self.manager.latest_checkpoint:
            message = f"--init_from ignored: --resume continues {self.manager.latest_checkpoint}"
        else:
            loaded = load_embedding_weights(self.method.embedding_model, source)
            message = f"--init_from: embedding model weights from {loaded}"
        if self.is_chief:
            print(message, flush=True)

    def _epoch_steps(self):
        """Steps of the next epoch: a whole epoch, or what ``--max_steps`` leaves of the run."""
        if not self.cfg.max_steps:
            return self.steps_per_epoch
        return max(0, min(self.steps_per_epoch, self.cfg.max_steps - int(self.step.numpy())))

    def _eval_due_at(self, step):
        every = self.cfg.eval_every_steps
        return self.eval_split is not None and every > 0 and step % every == 0

    def train_epoch(self, epoch):
        """One epoch (or what ``--max_steps`` leaves of it); returns the mean training losses."""
        cfg = self.cfg
        steps, first = self._epoch_steps(), int(self.step.numpy())
        self.method.on_epoch_begin(epoch)
        dataset = distribute_batches(
            self.strategy,
            lambda shard: data.train_dataset(
                self.train_split, self.sampler, seed=cfg.seed, epoch=epoch, augmentation=cfg.augmentation,
                preprocessing=self.preprocessing, image_size=cfg.image_size or None,
                num_replicas=self.strategy.num_replicas_in_sync, shard=shard).take(steps),
            self.global_batch,
        )
        step_fn = self._step_fn(self._active(epoch))
        bar = _progress(cfg, steps, epoch)
        totals = collections.defaultdict(float)
        for i, batch in enumerate(dataset):
            for g in self.groups:
                g.set_learning_rate(cfg, epoch + i / self.steps_per_epoch, first + i)
            losses = {k: float(v) for k, v in step_fn(batch).items()}
            for k, v in losses.items():
                totals[k] += v
            if bar:
                bar.update(i + 1, list(losses.items()))
            # An evaluation due at the epoch's last step is fit's, after the checkpoint.
            if i + 1 < steps and self._eval_due_at(first + i + 1):
                self._evaluate_and_record(epoch, {k: v / (i + 1) for k, v in totals.items()})
        means = {k: v / max(steps, 1) for k, v in totals.items()}
        summaries.write_scalars(self.writer, "train", means, epoch + 1)
        summaries.write_scalars(self.writer, "learning_rate", {g.name: g.learning_rate for g in self.groups}, epoch + 1)
        return means

    def evaluate(self, epoch, final=False):
        embeddings, labels = embed_split(self.method, self.eval_split, self.cfg, self.preprocessing)
        metrics = evaluate_embeddings(embeddings, labels, self.cfg)
        summaries.write_scalars(self.writer, "eval", {k: v for k, v in metrics.items() if k in self.cfg.eval_metrics}, epoch)
        if self.is_chief:
            normalized = keras.ops.convert_to_numpy(l2_normalize(embeddings)) if self.cfg.eval_l2_normalize else embeddings
            summaries.pair_distance_histograms(self.writer, normalized, labels, epoch, seed=self.cfg.seed)
            images = split_images(self.eval_split)
            if self.cfg.tb_neighbours:
                summaries.write_neighbour_grid(self.writer, images, normalized, labels, epoch,
                                               num_queries=self.cfg.tb_neighbours, distance=self.cfg.eval_distance)
            if final and self.cfg.tb_projector_points:
                n = min(len(labels), self.cfg.tb_projector_points)
                summaries.write_projector(self.logdir, normalized[:n], labels[:n], images(np.arange(n)))
        self.writer.flush()
        return metrics

    def input_spec(self):
        """What a user of the embedding model must apply to images (stored with exports)."""
        return {"augmentation": self.cfg.augmentation, "preprocessing": self.preprocessing,
                "image_size": self.cfg.image_size, "input_shape": list(self.method.embedding_model.input_shape[1:])}

    def _evaluate_and_record(self, epoch, train_losses, final=False):
        """Evaluates now (in or after ``epoch``), records it in the history and keeps the best
        checkpoint; returns the metrics."""
        cfg = self.cfg
        step = int(self.step.numpy())
        at = step if cfg.eval_every_steps else epoch + 1  # TensorBoard step and best/ checkpoint number
        metrics = self.evaluate(at, final=final)
        self.history.append({"epoch": epoch + 1, "step": step, **train_losses, **metrics})
        if metrics.get(cfg.best_metric, -np.inf) > self._best:
            self._best = metrics[cfg.best_metric]
            self.best_manager.save(checkpoint_number=at)
        _print_metrics(f"epoch {epoch + 1}" + (f" step {step}" if cfg.eval_every_steps else ""), metrics,
                       cfg.eval_metrics)
        return metrics

    def fit(self):
        """Train to ``cfg.epochs`` or ``cfg.max_steps`` iterations, whichever ends first (resuming
        if asked); returns the last evaluation's metrics."""
        cfg = self.cfg
        if self.is_chief:
            os.makedirs(self.logdir, exist_ok=True)
            with open(os.path.join(self.logdir, "config.json"), "w") as f:
                json.dump(vars(cfg), f, indent=1, sort_keys=True)
        start = self.restore() if cfg.resume else 0
        metrics = {}
        for epoch in range(start, cfg.epochs):
            if not self._epoch_steps():  # a resumed run that had reached --max_steps
                break
            train_losses = self.train_epoch(epoch)
            self.epoch.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)
            last = epoch + 1 == cfg.epochs or not self._epoch_steps()
            due = (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or self._eval_due_at(int(self.step.numpy()))
            if self.eval_split is not None and (due or last):
                metrics = self._evaluate_and_record(epoch, train_losses, final=last)
            if last:
                break
        self.writer.flush()
        if self.is_chief:
            with open(os.path.join(self.logdir, "history.json"), "w") as f:
                json.dump(self.history, f, indent=1)
        return metrics

    def export(self):
        """The embedding model as ``export/embedding_model.keras`` and a SavedModel."""
        out = os.path.join(self.logdir, "export")
        os.makedirs(out, exist_ok=True)
        model = self.method.embedding_model
        model.save(os.path.join(out, "embedding_model.keras"))
        model.export(os.path.join(out, "saved_model"), verbose=False)
        with open(os.path.join(out, "input_spec.json"), "w") as f:
            json.dump(self.input_spec(), f, indent=1)
        return out


def load_embedding_weights(model, source):
    """Copies an earlier run's embedding-model weights into ``model``; returns the file read.

    ``source``: a run directory (its ``best/`` checkpoint, else the last in ``checkpoints/``, else
    its export), a checkpoint prefix, an export directory or its ``embedding_model.keras``.
    Every weight of ``model`` must have a value of the same shape there (else a ValueError names
    the first that differs); nothing is assigned before all are checked.
    """
    kind, path = _weights_file(source)
    variables = model.weights
    if kind == "checkpoint":
        values = _checkpoint_values(path, model)
    else:
        values = [w.numpy() for w in keras.saving.load_model(path, compile=False).weights]
    differs = f"--init_from={path} holds another architecture:"
    if len(values) != len(variables):
        raise ValueError(f"{differs} its embedding model has {len(values)} weights, this run's {len(variables)}")
    missing = [v.path for v, x in zip(variables, values) if x is None]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"{differs} no value for {missing[0]}{more}")
    for v, x in zip(variables, values):
        if tuple(x.shape) != tuple(v.shape):
            raise ValueError(f"{differs} {v.path} has shape {tuple(x.shape)} there, {tuple(v.shape)} here")
    for v, x in zip(variables, values):
        v.assign(x)
    return path


def _weights_file(source):
    """('checkpoint' | 'export', path) that ``--init_from=source`` names."""
    if os.path.isdir(source):
        for folder in ("best", "checkpoints"):
            found = tf.train.latest_checkpoint(os.path.join(source, folder))
            if found:
                return "checkpoint", found
        for name in ("embedding_model.keras", os.path.join("export", "embedding_model.keras")):
            if os.path.isfile(os.path.join(source, name)):
                return "export", os.path.join(source, name)
    elif source.endswith(".keras") and os.path.isfile(source):
        return "export", source
    elif os.path.isfile(source + ".index"):
        return "checkpoint", source
    raise FileNotFoundError(f"--init_from={source}: not a run directory (with best/ or checkpoints/), a checkpoint "
                            f"or an exported embedding_model.keras")


def _checkpoint_values(path, model):
    """The values a trainer checkpoint holds for ``model.weights`` as its ``method.embedding_model``
    (None where it has none), matched by object path as ``tf.train.Checkpoint`` restores."""
    reader = tf.train.load_checkpoint(path)
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    children = lambda node: {c.local_name: c.node_id for c in graph.nodes[node].children}  # noqa: E731
    method = children(0).get("method")
    root = None if method is None else children(method).get("embedding_model")
    if root is None:
        raise ValueError(f"--init_from={path}: not a dmltf training checkpoint (it has no method.embedding_model)")
    keys = {}  # id(object) -> checkpoint key of its value (None: not a variable)

    def walk(obj, node):
        if id(obj) in keys:  # shared objects are reached along several paths
            return
        values = [a.checkpoint_key for a in graph.nodes[node].attributes if a.name == "VARIABLE_VALUE"]
        keys[id(obj)] = values[0] if values else None
        stored = children(node)
        for name, child in tf.train.TrackableView.children(obj).items():
            if name in stored:
                walk(child, stored[name])

    walk(model, root)
    return [reader.get_tensor(keys[id(v)]) if keys.get(id(v)) else None for v in model.weights]


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def _task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{resolver.task_type}_{resolver.task_id}" if resolver is not None else "0"


def _progress(cfg, steps, epoch):
    mode = cfg.progress
    if mode == "auto":
        mode = "bar" if sys.stdout.isatty() else "epoch"
    if mode == "none":
        return None
    print(f"epoch {epoch + 1}/{cfg.epochs}")
    return keras.utils.Progbar(steps, verbose=1 if mode == "bar" else 2)


def _print_metrics(where, metrics, names):
    shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in names if k in metrics)
    print(f"{where}: {shown}", flush=True)
