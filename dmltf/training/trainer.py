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

A ``--logdir`` holds one run: a new run refuses a directory that holds one (``--overwrite``
moves it aside), and ``--resume`` continues it with its history, its best score (stored in
``best/``) and its settings (only ``RESUME_SAFE_KEYS`` may change, recorded in config.json).
A damaged checkpoint is named in one error line (``--resume_fallback``: the one before it).

Runs count iterations too: ``--max_steps`` ends the run after that many (the last epoch may be
partial), the rate is set before every step from the global step (``--schedule=piecewise``
decays at iterations), and ``--eval_every_steps`` evaluates between epochs' ends as well (the
evaluations of such a run are then logged at the global step, not the epoch). ``--init_from``
starts the embedding model from an earlier run's weights, with fresh losses and optimizers.

Each epoch logs one line (the mean of each loss part, images/s, its seconds and the run's
training time) and adds a record to ``history.json`` (see :meth:`Trainer._save_history`).
``--checkpoint_every`` thins the epoch-end checkpoints (the last epoch's is always written, and
``best/`` whenever --best_metric improves) and ``--checkpoint_every_steps`` adds checkpoints inside
epochs (numbered by global step); ``--resume`` continues from the latest one written, inside an
epoch with its next batch.
``--early_stop_patience`` ends the run at the end of an epoch once --best_metric has not improved
for that many evaluations (the count is rebuilt from the history on --resume).
``--save_embeddings`` writes the last evaluation's embeddings (:func:`write_embeddings`).
``--jit_compile`` compiles each replica's forward and backward pass and the embedding step with
XLA (:func:`resolve_jit_compile`; a step XLA cannot compile warns once and runs without it:
:class:`XLAFallback`); a single replica's batches are prefetched to its GPU.
"""
import collections
import glob
import json
import os
import re
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from dmltf import data, evaluation
from dmltf.data.images import decode_jpeg
from dmltf.distances import l2_normalize
from dmltf.methods.base import gradients_by_target, loss_scope
from dmltf.training import summaries
from dmltf.training.optim import GroupOptimizer

NONFINITE_ACTIONS = ("stop", "skip")  # --nonfinite


class NonFiniteError(FloatingPointError):
    """A training step met a non-finite loss or gradient (``--nonfinite=stop``), or the model's
    variables are non-finite at the end of an epoch; nothing non-finite was applied or saved."""


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
    (one per worker), only that worker's contiguous share ``shard=(index, count)``. The batches
    are copied to the replicas' devices ahead of the step, in order.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        device = prefetch_device()
        dataset = make_dataset(None)
        # The step's device gets the next batches while it computes (as distribute_datasets_from_function's
        # experimental_fetch_to_device does for N replicas); a CPU step reads the host batches as they are.
        return dataset if device is None else dataset.apply(tf.data.experimental.prefetch_to_device(device, 2))
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
    embed_fn = _compiled_embed(method, resolve_jit_compile(cfg.jit_compile))
    return embed_batches(embed_fn, split, cfg.eval_batch_size, augmentation=cfg.augmentation,
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


def _compiled_embed(method, jit_compile=False):
    """One traced ``embed`` per method and XLA setting (a batch dimension of any size; XLA
    compiles once per batch size it meets)."""
    if not hasattr(method, "_dmltf_embed_fns"):
        method._dmltf_embed_fns = {}
    if jit_compile not in method._dmltf_embed_fns:
        method._dmltf_embed_fns[jit_compile] = compiled_embedding_step(
            method.embed, f"the embedding step of {type(method).__name__}", jit_compile)
    return method._dmltf_embed_fns[jit_compile]


def compiled_embedding_step(embed, what, jit_compile):
    """``embed`` traced for a batch dimension of any size, compiled with XLA if ``jit_compile``
    (falling back once, :class:`XLAFallback`, naming ``what``)."""
    return XLAFallback(lambda xla: tf.function(embed, reduce_retracing=True, jit_compile=xla), what, jit_compile)


JIT_COMPILE_VALUES = ("auto", "true", "false")  # --jit_compile


def resolve_jit_compile(value):
    """``--jit_compile`` as a bool: ``true``/``false`` as given, ``auto`` on when TensorFlow sees
    a GPU and off on CPU (on 2 CPU cores bench/backbone_speed.py measured every registry backbone's
    compiled step 1.3-6x slower than the plain one, after 50-130 s of compiling at 224 px)."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in JIT_COMPILE_VALUES:
        raise ValueError(f"--jit_compile must be one of {', '.join(JIT_COMPILE_VALUES)}, got {value!r}")
    if text == "auto":
        # The physical list: listing logical devices would start the runtime before the strategy
        # (a multi-worker strategy's collectives, --cpu_replicas' split) can configure it.
        return bool(tf.config.list_physical_devices("GPU"))
    return text == "true"


def prefetch_device():
    """The device a single-replica step runs on when it is not the host's: the first GPU, else None."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else None


class XLAFallback:
    """Calls ``build(jit_compile)`` (a traced function) compiled with XLA if ``jit_compile``; if
    XLA cannot compile it (an op without an XLA kernel such as a py_function; under op
    determinism, a max-pool gradient; a replica's variable on another logical CPU), prints one
    warning naming ``what`` and the line of the XLA error that says why (:func:`xla_error_line`),
    and from then on runs ``build(False)``, starting with the same arguments. The failure is the
    compile's, before the function ran: no variable was updated (the trainer's step counter
    waits for the replicas' results) and the caller's batch is used again."""

    def __init__(self, build, what, jit_compile):
        self.build, self.what, self.jit_compile = build, what, jit_compile
        self.fn = build(jit_compile)

    def __call__(self, *args):
        if not self.jit_compile:
            return self.fn(*args)
        try:
            return self.fn(*args)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
            if not is_xla_compile_error(e):
                raise
            print(f"warning: --jit_compile: {self.what} does not compile with XLA ({xla_error_line(e)}); it runs "
                  f"without XLA", flush=True)
        self.jit_compile = False
        self.fn = self.build(False)
        return self.fn(*args)


def is_xla_compile_error(error):
    """Whether a TensorFlow error is XLA's refusal to compile or place a function (XLA's messages
    name it, or its known-issues page: e.g. a replica's variable on another logical CPU)."""
    message = (getattr(error, "message", None) or str(error)).lower()
    return "xla" in message or "compile-time constant" in message


def xla_error_line(error):
    """The line of an XLA compile error that says why: the unsupported operations, else the line
    TensorFlow puts before the failing node (a graph error starts with a header and the node's
    definition), without the traced function's attribute list."""
    message = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in message.splitlines()]
    reason = next((line for line in lines if line.startswith("Detected unsupported operations")), None)
    if reason is None:
        node = next((i for i, line in enumerate(lines) if line.startswith("[[")), len(lines))
        said = [line for line in lines[:node] if line and not line.startswith("Cf. ")]  # not a link to XLA's docs
        reason = said[-1] if said else first_line(error)
    reason = re.sub(r"^\(\d+\) [A-Z_]+: *", "", reason)  # "(0) INVALID_ARGUMENT: " of a multi-replica error
    return re.sub(r"\[_XlaMustCompile[^\]]*\]|\{\{node [^}]*\}\}", "", reason).strip()


def evaluate_embeddings(embeddings, labels, cfg, probe=None):
    """The ``--eval_*`` metrics; ``probe``: (embeddings, labels) that ``linear_accuracy``'s probe
    is fit on (see :func:`linear_probe_split`), None for the zero-shot protocol."""
    normalize = (lambda x: keras.ops.convert_to_numpy(l2_normalize(x))) if cfg.eval_l2_normalize else (lambda x: x)
    probe_embeddings, probe_labels = (None, None) if probe is None else (normalize(probe[0]), probe[1])
    return evaluation.evaluate(normalize(embeddings), labels, metrics=tuple(cfg.eval_metrics),
                               distance=cfg.eval_distance, kmeans_backend=cfg.eval_kmeans, seed=cfg.seed,
                               average=cfg.eval_average, probe_embeddings=probe_embeddings, probe_labels=probe_labels)


def linear_probe_split(metrics, train_split, eval_split):
    """``train_split`` when ``metrics`` hold ``linear_accuracy`` and the train split holds every class
    of ``eval_split`` (the dml-tf seed's classification splits: the probe is fit on the train
    split), else None (zero-shot splits: the probe is fit on half of the eval split)."""
    if evaluation.LINEAR_ACCURACY not in metrics:
        return None
    return train_split if np.isin(eval_split.labels, train_split.labels).all() else None


# Settings a resumed run may change (each change is printed and recorded in config.json's
# "resumed" list): its length, evaluation cadence and output, learning rates, schedule, weight
# decay and clipping, and how this process runs. Every other change (method, model, losses and
# their parameters, miner, sampler, data, seed, precision, optimizer, the metrics' definitions
# and --best_metric, ...) would change the model, its state or what the best score measures,
# and is refused.
RESUME_SAFE_KEYS = frozenset({
    "epochs", "max_steps", "max_steps_per_epoch",
    "eval_every", "eval_every_steps", "eval_metrics", "eval_batch_size",
    "tb_neighbours", "tb_projector_points", "export", "progress", "baselines",
    "lr", "schedule", "lr_step_size", "lr_gamma", "lr_milestones", "lr_boundaries", "lr_warmup_epochs",
    "group_lrs", "group_lr_multipliers", "loss_lr_multiplier", "weight_decay", "group_weight_decays",
    "clip_grad_value", "clip_grad_norm", "clip_grad_steps", "lr_schedule_after_warmup",
    "strategy", "cpu_replicas", "nonfinite", "init_from", "jit_compile",
    "threads", "checkpoint_every", "checkpoint_every_steps", "early_stop_patience", "save_embeddings",
})
# Keys of a history.json record that time an epoch (not in ``Trainer.history``, the evaluations).
TIMING_KEYS = ("images_per_s", "epoch_seconds", "elapsed_seconds")
EMBEDDINGS_FILE = "embeddings.h5"
# Flags of one invocation, not of the run: never compared.
INVOCATION_KEYS = frozenset({"logdir", "resume", "overwrite", "resume_fallback"})
# What makes a directory a run's (TensorBoard events too: a second run would merge its curves).
RUN_FILES = ("config.json", "history.json", "checkpoints", "best", "export", "events.out.tfevents.*")


def holds_run(logdir):
    return any(glob.glob(os.path.join(glob.escape(logdir), name)) for name in RUN_FILES)


def move_aside(logdir):
    """Renames ``logdir`` to a new sibling ``<logdir>.old-<time>``; returns that path."""
    base = f"{os.path.normpath(logdir)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = base, 1
    while os.path.exists(aside):
        n += 1
        aside = f"{base}-{n}"
    os.rename(logdir, aside)
    return aside


def read_run_config(logdir):
    """The config.json of the run in ``logdir`` (a ValueError if there is none)."""
    path = os.path.join(logdir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"--resume: {logdir} holds no run to continue (no config.json); start one without --resume")
    return read_json(path)


def read_json(path):
    """The JSON file a run wrote (config.json, history.json, input_spec.json); a damaged one is
    a ValueError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged: {e}") from None


def resume_changes(stored, cfg):
    """{key: [old, new]} for the keys of ``RESUME_SAFE_KEYS`` that ``cfg`` changes from a run's
    ``stored`` config; a ValueError names every other change with its old and new value."""
    current = vars(cfg)
    changed = {k: [stored[k], current[k]] for k in sorted((set(stored) & set(current)) - INVOCATION_KEYS)
               if stored[k] != current[k] and not _legacy_same(k, stored[k], current[k])}
    refused = [k for k in changed if k not in RESUME_SAFE_KEYS]
    if refused:
        shown = ", ".join(f"--{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
        raise ValueError(f"--resume: {cfg.logdir} was trained with other settings that change the model, its state "
                         f"or its scores: {shown} (resume with the run's values, or start a new run)")
    return changed


def _legacy_same(key, stored, current):
    """Whether an older run's stored value means the current one: before issue 18,
    ``--loss_lr_multiplier=0`` meant the loss's reference multiplier, now the empty value."""
    return key.endswith("loss_lr_multiplier") and stored == 0 and not isinstance(stored, bool) and current == ""


def read_history(logdir):
    path = os.path.join(logdir, "history.json")
    if not os.path.isfile(path):
        return []
    return read_json(path)


def evaluations(records):
    """The evaluation records of a history.json list, without the epoch timing keys: every
    record but an epoch end without an evaluation (``"evaluated": false``)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records if r.get("evaluated", True)]


def evaluations_since_best(history, metric):
    """Consecutive evaluations at the end of ``history`` in which ``metric`` did not improve on
    the best before it (the early-stop count; an evaluation without it does not improve)."""
    best, since = -np.inf, 0
    for record in history:
        if record.get(metric, -np.inf) > best:
            best, since = record[metric], 0
        else:
            since += 1
    return since


def configure_threads(threads):
    """``--threads``: TensorFlow's intra-op and inter-op thread counts (0 keeps TensorFlow's
    default). Must run before TensorFlow initialises its runtime (its first op or device query)."""
    if threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: TensorFlow's default), got {threads}")
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:
        raise ValueError(f"--threads={threads}: TensorFlow's runtime is already initialised ({first_line(e)}); "
                         f"set it before the first TensorFlow operation") from None


def write_embeddings(path, embeddings, labels, **attrs):
    """Writes ``path`` (HDF5, under a temporary name, then renamed: a kill leaves no part):

    ``embeddings``  float32 [N, D], the embedding model's outputs (before the evaluation's
                    --eval_l2_normalize), in the order of the split's rows
    ``labels``      int64 [N], the split's class ids
    attributes      ``attrs`` (epoch, step, split, ...)

    The datasets are those of ``train/infer.py --output=X.h5`` for a dataset split."""
    import h5py

    partial = f"{path}.partial-{os.getpid()}"
    try:
        with h5py.File(partial, "w") as f:
            f["embeddings"] = np.asarray(embeddings, np.float32)
            f["labels"] = np.asarray(labels, np.int64)
            for k, v in attrs.items():
                f.attrs[k] = v
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_json(path, value, **options):
    """Writes under a temporary name, then renames: a kill leaves the old file or the new one, never a part."""
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with open(partial, "w") as f:
            json.dump(value, f, indent=1, **options)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def checkpoint_damage(path):
    """None if every file of checkpoint ``path`` reads back whole (index, values and their
    checksums), else one line: the damaged file and what is wrong."""
    data_files = sorted(glob.glob(glob.escape(path) + ".data-*"))
    for name, present in ((f"{path}.index", os.path.isfile(f"{path}.index")), (f"{path}.data-*", data_files)):
        if not present:
            return f"{name}: missing"
    try:
        reader = tf.train.load_checkpoint(path)
    except tf.errors.OpError as e:
        return f"{path}.index: {first_line(e)}"
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError) as e:  # IndexError: a truncated data file
        return f"{', '.join(data_files)}: {first_line(e)}"
    return None


def first_line(error):
    """The first line of a TensorFlow error's message (its type's name when it has none)."""
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


class Trainer:
    """Trains ``build_method()`` on ``train_split`` and evaluates on ``eval_split``.

    ``build_method`` is called inside the strategy scope; ``preprocessing`` is the input
    normalisation name (the backbone's unless overridden by flag).
    """

    def __init__(self, cfg, build_method, train_split, eval_split=None, *, sampler, preprocessing="none",
                 strategy=None):
        self.cfg, self.train_split, self.eval_split, self.preprocessing = cfg, train_split, eval_split, preprocessing
        for flag, lowest in (("checkpoint_every", 1), ("checkpoint_every_steps", 0), ("early_stop_patience", 0)):
            if getattr(cfg, flag) < lowest:
                raise ValueError(f"--{flag} must be >= {lowest}, got {getattr(cfg, flag)}")
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
            self.best_score = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name="best_score")
        # Before anything is written: a new run refuses a --logdir holding one (or moves it aside).
        self._stored_config, self._resume_changes = self._claim_logdir() if self.is_chief else ({}, {})
        state = dict(method=self.method, epoch=self.epoch, step=self.step,
                     **{f"optimizer_{g.name}": g.optimizer for g in self.groups})
        self.checkpoint = tf.train.Checkpoint(**state)
        # best/ records its own --best_metric score: the last checkpoint is written before its
        # epoch's evaluation, so its copy would lag.
        self.best_checkpoint = tf.train.Checkpoint(best_score=self.best_score, **state)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(self.logdir, "checkpoints"), max_to_keep=2)
        self.best_manager = tf.train.CheckpointManager(self.best_checkpoint, os.path.join(self.logdir, "best"),
                                                       max_to_keep=1)
        self._writer = None
        self.jit_compile = resolve_jit_compile(cfg.jit_compile)  # the steps' XLA setting (--jit_compile)
        self._step_fns = {}  # (active groups, clip) -> XLAFallback
        self.records = []  # history.json: epoch ends and evaluations (see fit)
        self.training_seconds = 0.0  # this run's training time, over --resume too
        self._evals_since_best = 0
        self._last_eval = None  # (embeddings, labels, epoch, step) when --save_embeddings
        self._resume_from = self._resume_checkpoint() if cfg.resume else None
        if cfg.init_from:
            self._init_from(cfg.init_from)

    @property
    def history(self):
        """The evaluation records: {epoch, step, the epoch's training means, metrics}."""
        return evaluations(self.records)

    @property
    def writer(self):
        """The TensorBoard writer, created on first use: a trainer that never trains writes no files."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.logdir)
        return self._writer

    # -- the run directory ----------------------------------------------------------------
    def _claim_logdir(self):
        """Checks that this run may use ``--logdir``; returns (the stored config.json of the run
        ``--resume`` continues, its changed safe keys {key: [old, new]}); ({}, {}) for a new run."""
        cfg, logdir = self.cfg, self.cfg.logdir
        if cfg.resume and cfg.overwrite:
            raise ValueError("--resume continues the run in --logdir and --overwrite starts a new one: give one")
        if cfg.resume:
            stored = read_run_config(logdir)
            changes = resume_changes(stored, cfg)
            if changes:
                shown = ", ".join(f"--{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
                print(f"warning: --resume continues {logdir} with changed settings: {shown} (recorded in its "
                      f"config.json)", flush=True)
            return stored, changes
        if holds_run(logdir):
            if not cfg.overwrite:
                raise ValueError(f"{logdir} already holds a run: continue it with --resume, or start a new one in "
                                 f"another --logdir (or here with --overwrite, which moves the old run aside)")
            print(f"--overwrite: moved the run in {logdir} aside to {move_aside(logdir)}", flush=True)
        return {}, {}

    def _resume_checkpoint(self):
        """The checkpoint ``--resume`` continues from: the latest, or with ``--resume_fallback`` the
        one before it if the latest is damaged; None before the run's first checkpoint."""
        if self.best_manager.latest_checkpoint:  # its score is restored: a damaged one fails here, in one line
            damage = checkpoint_damage(self.best_manager.latest_checkpoint)
            if damage:
                raise ValueError(f"damaged best checkpoint: {damage}")
        newest_first = self.manager.checkpoints[::-1]
        if not newest_first:
            if self.is_chief:
                print(f"--resume: no checkpoint in {self.manager.directory} yet: the run starts at epoch 1", flush=True)
            return None
        damage = checkpoint_damage(newest_first[0])
        if damage is None:
            return newest_first[0]
        if len(newest_first) < 2:
            raise ValueError(f"damaged checkpoint: {damage} (no earlier checkpoint to fall back to)")
        previous = newest_first[1]
        if not self.cfg.resume_fallback:
            raise ValueError(f"damaged checkpoint: {damage} (--resume_fallback continues from {previous})")
        previous_damage = checkpoint_damage(previous)
        if previous_damage:
            raise ValueError(f"damaged checkpoints: {damage}; and {previous_damage}")
        if self.is_chief:
            print(f"--resume_fallback: damaged checkpoint {damage}; continuing from {previous}", flush=True)
        return previous

    # -- one training step -------------------------------------------------------------
    def _active(self, epoch):
        if epoch < self.cfg.warmup_epochs:
            return tuple(g for g in self.groups if g.name in self.cfg.warmup_groups)
        return tuple(self.groups)

    def _checked(self, active):
        """Names of the values a step of ``active`` checks before its update, in the order of its
        flags: the losses the groups minimise, then each group's gradients. Under float16 loss
        scaling, overflowed gradients are the LossScaleOptimizer's to skip (it lowers its scale):
        only the losses are checked."""
        losses = [f"loss {k!r}" for k in dict.fromkeys(g.loss_key for g in active)]
        if self.cfg.precision == "mixed_float16":
            return losses
        return losses + [f"gradient of group {g.name!r}" for g in active]

    def _step_fn(self, active, clip):
        """The traced step of the ``active`` groups, their updates clipped if ``clip``
        (``GroupOptimizer.clips_at``). It returns the replicas' mean losses, a flag
        per value of ``_checked(active)`` (set where it is non-finite on any replica; then no
        update is applied) and a flag per active group, set where the group's weights are
        non-finite after the update (finite gradients can still overflow them, e.g. a decoupled
        weight decay with lr x wd > 2). With ``--jit_compile`` each replica's forward and backward
        pass is compiled with XLA (see :meth:`_build_step`); once a step has fallen back
        (:class:`XLAFallback`), the steps traced after it are not compiled either."""
        key = (tuple(g.name for g in active), clip)
        if key not in self._step_fns:
            jit_compile = self.jit_compile and all(f.jit_compile for f in self._step_fns.values())
            what = f"the training step of {', '.join(repr(g.name) for g in active)}{' (clipped)' if clip else ''}"
            self._step_fns[key] = XLAFallback(lambda xla: self._build_step(active, clip, xla), what, jit_compile)
        return self._step_fns[key]

    def _build_step(self, active, clip, jit_compile):
        """The ``tf.function`` of :meth:`_step_fn`. Under XLA, only the replica's losses, gradients
        and flags are compiled (where the compute is, as Keras' own trainer compiles its
        replica step): the cross-replica reduce, the ``tf.cond`` and the optimizers' merge_call
        must stay outside it."""
        scaled = self.cfg.precision == "mixed_float16"
        replicas = self.strategy.num_replicas_in_sync
        # One backward pass per loss key; under float16 loss scaling each group's optimizer
        # has its own scale, so each group gets its own pass.
        keys = [g.name if scaled else g.loss_key for g in active]
        loss_keys = list(dict.fromkeys(g.loss_key for g in active))

        def forward_backward(batch):
            with tf.GradientTape(persistent=True) as tape:
                losses = self.method.compute_losses(batch, training=True)
                # Each replica holds the global-batch value; the optimizers sum the replicas'
                # gradients, so each replica contributes 1/N of it.
                targets = {k: g.optimizer.scale_loss(losses[g.loss_key] / replicas) for k, g in zip(keys, active)}
            grads = gradients_by_target(tape, targets, [(k, g.group.variables) for k, g in zip(keys, active)])
            del tape
            values = [losses[k] for k in loss_keys] + ([] if scaled else grads)
            return losses, grads, _nonfinite_flags(values)

        replica_step = tf.function(forward_backward, jit_compile=True) if jit_compile else forward_backward

        def apply(grads):
            for g, group_grads in zip(active, grads):
                g.apply(group_grads, clip)

        def step(dist_batch):
            losses, grads, nonfinite = self.strategy.run(replica_step, args=(dist_batch,))
            # Each replica's gradients are its own share: any replica's flag stops the update
            # on all of them. The cond is taken in cross-replica context, as the optimizers'
            # merge_call requires.
            nonfinite = self.strategy.reduce(tf.distribute.ReduceOp.SUM, nonfinite, axis=None) > 0
            tf.cond(tf.reduce_any(nonfinite), lambda: None, lambda: self.strategy.run(apply, args=(grads,)))
            overflowed = _nonfinite_flags([g.group.variables for g in active]) > 0
            # After the replicas' step: one that fails (XLA's compile: see XLAFallback) counts no step.
            with tf.control_dependencies([nonfinite]):
                self.step.assign_add(1)
            means = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in losses.items()}
            return means, nonfinite, overflowed

        return tf.function(step)

    # -- the loop -----------------------------------------------------------------------
    def restore(self):
        """Continue from the checkpoint ``--resume`` chose (:meth:`_resume_checkpoint`), if any, with
        the best score of ``best/`` and the history up to that checkpoint; returns the epoch to start from."""
        if self._resume_from:
            self.checkpoint.restore(self._resume_from).assert_existing_objects_matched()
            best = self.best_manager.latest_checkpoint
            if best:
                tf.train.Checkpoint(best_score=self.best_score).restore(best).expect_partial()
        # Evaluations after the checkpoint (or before the first) belong to the part of the run that is lost.
        step = int(self.step.numpy())
        self.records = [h for h in read_history(self.logdir) if h["step"] <= step]
        timed = [r["elapsed_seconds"] for r in self.records if "elapsed_seconds" in r]
        self.training_seconds = timed[-1] if timed else 0.0
        self._evals_since_best = evaluations_since_best(self.history, self.cfg.best_metric)
        return int(self.epoch.numpy())

    def _init_from(self, source):
        """The embedding weights of an earlier run (:func:`load_embedding_weights`), unless
        ``--resume`` continues this one. Called on construction: a wrong source fails before training."""
        if self._resume_from:
            message = f"--init_from ignored: --resume continues {self._resume_from}"
        else:
            loaded = load_embedding_weights(self.method.embedding_model, source)
            message = f"--init_from: embedding model weights from {loaded}"
        if self.is_chief:
            print(message, flush=True)

    def _epoch_offset(self):
        """Steps of the epoch in progress already taken: a run resumed from a checkpoint written
        inside an epoch (``--checkpoint_every_steps``) continues it with the next batch. (Counted
        from whole epochs of ``steps_per_epoch``: after an epoch that ``--max_steps`` cut short
        and a resume with a larger one, a few batches of the epoch are repeated.)"""
        return min(max(0, int(self.step.numpy()) - int(self.epoch.numpy()) * self.steps_per_epoch),
                   self.steps_per_epoch)

    def _epoch_steps(self):
        """Steps of the next epoch: a whole epoch (less its steps taken before a resume), or what
        ``--max_steps`` leaves of the run."""
        steps = self.steps_per_epoch - self._epoch_offset()
        if not self.cfg.max_steps:
            return steps
        return max(0, min(steps, self.cfg.max_steps - int(self.step.numpy())))

    def _checkpoint_number(self, epoch):
        """A checkpoint's number: the epoch, or the global step when checkpoints are also written
        inside epochs (--checkpoint_every_steps)."""
        return int(self.step.numpy()) if self.cfg.checkpoint_every_steps else epoch

    def _eval_due_at(self, step):
        every = self.cfg.eval_every_steps
        return self.eval_split is not None and every > 0 and step % every == 0

    def train_epoch(self, epoch):
        """One epoch (or what ``--max_steps`` leaves of it); returns the mean training losses."""
        cfg = self.cfg
        started = time.perf_counter()
        steps, first, done = self._epoch_steps(), int(self.step.numpy()), self._epoch_offset()
        self.method.on_epoch_begin(epoch)
        dataset = distribute_batches(
            self.strategy,
            lambda shard: data.train_dataset(
                self.train_split, self.sampler, seed=cfg.seed, epoch=epoch, augmentation=cfg.augmentation,
                preprocessing=self.preprocessing, image_size=cfg.image_size or None,
                num_replicas=self.strategy.num_replicas_in_sync, shard=shard).skip(done).take(steps),
            self.global_batch,
        )
        active = self._active(epoch)
        checked = self._checked(active)
        bar = _progress(cfg, steps, epoch)
        # Means over the applied steps: a skipped step's losses are not the model's.
        totals, applied, skipped = collections.defaultdict(float), 0, 0
        means, samples = {}, collections.defaultdict(list)  # samples: a method's per-sample values (vectors)
        for i, batch in enumerate(dataset):
            for g in self.groups:
                g.set_learning_rate(cfg, epoch + (done + i) / self.steps_per_epoch, first + i)
            step_fn = self._step_fn(active, any(g.clips_at(first + i) for g in active))
            with loss_scope(cfg.loss_scope):  # read when the step is traced, by every replica's thread
                losses, nonfinite, overflowed = step_fn(batch)
            at = f"epoch {epoch + 1}, global step {first + i + 1}"
            overflowed = [g.name for g, flag in zip(active, overflowed.numpy()) if flag]
            if overflowed:  # an update already applied: no step to skip
                self.writer.flush()
                raise NonFiniteError(f"non-finite weights of group {overflowed[0]!r} after the update at {at}: no "
                                     f"checkpoint is written after it (lower --lr or --weight_decay)")
            bad = [name for name, flag in zip(checked, nonfinite.numpy()) if flag]
            if bad and cfg.nonfinite != "skip":  # stop, the default
                self.writer.flush()
                # The first is the cause (losses come first: a non-finite loss makes its gradients so).
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise NonFiniteError(f"non-finite {bad[0]}{more} at {at}: the step was not applied and no checkpoint "
                                     f"is written after it (lower --lr, set --clip_grad_norm, or --nonfinite=skip)")
            if bad:
                skipped += 1
            else:
                applied += 1
                for k, v in losses.items():
                    if v.shape.rank:
                        samples[k].append(v.numpy())
                    else:
                        totals[k] += float(v)
            means = {k: v / applied for k, v in totals.items()}
            if cfg.nonfinite == "skip":
                means["skipped_steps"] = skipped
            if bar:  # the skip count once there is one (a Progbar shows 0 as 0.0000e+00)
                bar.update(i + 1, [(k, v) for k, v in means.items() if k != "skipped_steps" or v])
            # A checkpoint or evaluation due at the epoch's last step is fit's.
            every = cfg.checkpoint_every_steps
            if i + 1 < steps and every and (first + i + 1) % every == 0:
                self.manager.save(checkpoint_number=self._checkpoint_number(epoch))
            if i + 1 < steps and self._eval_due_at(first + i + 1):
                evaluating = time.perf_counter()
                self._evaluate_and_record(epoch, means)
                started += time.perf_counter() - evaluating  # training time only
        _check_finite_variables(self.method, epoch)
        seconds = time.perf_counter() - started
        self.training_seconds += seconds
        ran = int(self.step.numpy()) - first
        # Images the steps took (applied or skipped) per second of training (the epoch's setup and
        # tracing included, its --eval_every_steps evaluations not).
        self.epoch_timing = {"images_per_s": ran * self.global_batch / max(seconds, 1e-9), "epoch_seconds": seconds,
                             "elapsed_seconds": self.training_seconds}
        summaries.write_scalars(self.writer, "train", means, epoch + 1)
        with self.writer.as_default():
            for k, v in samples.items():
                summaries.write_histogram(f"train/{k}", np.concatenate(v), epoch + 1)
        summaries.write_scalars(self.writer, "speed", {"images_per_s": self.epoch_timing["images_per_s"]}, epoch + 1)
        summaries.write_scalars(self.writer, "learning_rate", {g.name: g.learning_rate for g in self.groups}, epoch + 1)
        return means

    def evaluate(self, epoch, final=False):
        embeddings, labels = embed_split(self.method, self.eval_split, self.cfg, self.preprocessing)
        probe_split = linear_probe_split(self.cfg.eval_metrics, self.train_split, self.eval_split)
        probe = None if probe_split is None else embed_split(self.method, probe_split, self.cfg, self.preprocessing)
        metrics = evaluate_embeddings(embeddings, labels, self.cfg, probe)
        if final and self.is_chief and evaluation.LINEAR_PROBE_PROTOCOL in metrics:
            print(f"linear_accuracy protocol: {metrics[evaluation.LINEAR_PROBE_PROTOCOL]}", flush=True)
        if self.cfg.save_embeddings:
            self._last_eval = (embeddings, labels, int(self.epoch.numpy()), int(self.step.numpy()))
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
        record = {"epoch": epoch + 1, "step": step, **train_losses, **metrics}
        if self.records and self.records[-1]["step"] == step and self.records[-1].get("evaluated") is False:
            self.records[-1] = {**self.records[-1], **record}  # this epoch's end, now evaluated
            del self.records[-1]["evaluated"]
        else:
            self.records.append(record)
        if metrics.get(cfg.best_metric, -np.inf) > self.best_score.numpy():
            self.best_score.assign(metrics[cfg.best_metric])
            self.best_manager.save(checkpoint_number=at)
            self._evals_since_best = 0
        else:
            self._evals_since_best += 1
        self._save_history()
        _print_metrics(f"epoch {epoch + 1}" + (f" step {step}" if cfg.eval_every_steps else ""), metrics,
                       cfg.eval_metrics)
        return metrics

    def _save_history(self):
        """history.json after every epoch and evaluation: a killed run keeps the evaluations of its
        checkpoints. A record per epoch end (its training means, images_per_s, epoch_seconds and
        elapsed_seconds, the run's training time so far; the metrics when it was evaluated, else
        ``"evaluated": false``) and one per evaluation between epoch ends (--eval_every_steps)."""
        if self.is_chief:
            write_json(os.path.join(self.logdir, "history.json"), self.records)

    def fit(self):
        """Train to ``cfg.epochs`` or ``cfg.max_steps`` iterations, whichever ends first (resuming
        if asked); returns the last evaluation's metrics."""
        cfg = self.cfg
        start = self.restore() if cfg.resume else 0
        if self.is_chief:  # the run starts: its config, with what each --resume changed
            record = dict(vars(cfg))
            if cfg.resume:
                record["resumed"] = [*self._stored_config.get("resumed", []),
                                     {"epoch": start, "changed": self._resume_changes}]
            os.makedirs(self.logdir, exist_ok=True)
            write_json(os.path.join(self.logdir, "config.json"), record, sort_keys=True)
        metrics, patience = {}, cfg.early_stop_patience
        if patience and self._evals_since_best >= patience and start < cfg.epochs:
            if self.is_chief:
                print(f"--resume: the run stopped early at epoch {start} ({cfg.best_metric} had not improved for "
                      f"{self._evals_since_best} evaluations; --early_stop_patience={patience})", flush=True)
            return metrics
        for epoch in range(start, cfg.epochs):
            if not self._epoch_steps():  # a resumed run that had reached --max_steps
                break
            train_losses = self.train_epoch(epoch)
            self.epoch.assign(epoch + 1)
            last = epoch + 1 == cfg.epochs or not self._epoch_steps()
            saved = last or (epoch + 1) % cfg.checkpoint_every == 0
            if saved:
                self.manager.save(checkpoint_number=self._checkpoint_number(epoch + 1))
            self._log_epoch(epoch, train_losses)
            self.records.append({"epoch": epoch + 1, "step": int(self.step.numpy()), **train_losses,
                                 **self.epoch_timing, "evaluated": False})
            due = (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or self._eval_due_at(int(self.step.numpy()))
            if self.eval_split is not None and (due or last):
                metrics = self._evaluate_and_record(epoch, train_losses, final=last)
            else:
                self._save_history()
            if not last and patience and self._evals_since_best >= patience:
                if not saved:  # the last checkpoint is always kept
                    self.manager.save(checkpoint_number=self._checkpoint_number(epoch + 1))
                self.records[-1]["stopped_early"] = True
                self._save_history()
                if self.is_chief:
                    print(f"early stop after epoch {epoch + 1}: {cfg.best_metric} has not improved on "
                          f"{self.best_score.numpy():.4f} for {self._evals_since_best} evaluations "
                          f"(--early_stop_patience={patience})", flush=True)
                break
            if last:
                break
        self.writer.flush()
        self._save_history()  # also for a run without evaluations
        if cfg.save_embeddings and self.is_chief:
            self._save_embeddings()
        return metrics

    def _save_embeddings(self):
        """--save_embeddings: the last evaluation's embeddings (:func:`write_embeddings`)."""
        if self._last_eval is None:
            print("warning: --save_embeddings: no evaluation ran in this process, nothing written", flush=True)
            return
        embeddings, labels, epoch, step = self._last_eval
        path = os.path.join(self.logdir, EMBEDDINGS_FILE)
        write_embeddings(path, embeddings, labels, epoch=epoch, step=step, split=self.cfg.eval_split,
                         dataset=self.cfg.dataset)
        print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings of the final evaluation to {path}",
              flush=True)

    def _log_epoch(self, epoch, train_losses):
        """One line per epoch: the mean of each loss part, images/s, the epoch's and the run's seconds."""
        if not self.is_chief or self.cfg.progress == "none":
            return
        t = self.epoch_timing
        parts = "  ".join(f"{k} {v:.4f}" if k != "skipped_steps" else f"{k} {v}" for k, v in train_losses.items())
        print(f"epoch {epoch + 1}/{self.cfg.epochs}: {parts}  |  {t['images_per_s']:,.0f} images/s  "
              f"{t['epoch_seconds']:.1f} s  (training {t['elapsed_seconds']:.1f} s)", flush=True)

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
    # The trainer passes running means: shown as given (a Progbar average shows the last value at the end).
    return keras.utils.Progbar(steps, verbose=1 if mode == "bar" else 2, stateless_metrics=())


def _nonfinite_flags(values):
    """int32 [len(values)]: 1 where the value (a tensor, or a list of gradients or variables; None
    and IndexedSlices allowed) has a non-finite element."""
    def all_finite(value):
        tensors = [v.values if isinstance(v, tf.IndexedSlices) else v for v in tf.nest.flatten(value) if v is not None]
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]) if tensors else tf.constant(True)

    return tf.stack([tf.cast(tf.logical_not(all_finite(v)), tf.int32) for v in values])


def _check_finite_variables(method, epoch):
    """Raises NonFiniteError if a variable of ``method`` is non-finite after ``epoch``: forward-pass
    state (batch-norm statistics) is updated even by a step whose update was not applied."""
    for v in method.variables:
        value = keras.ops.convert_to_numpy(v)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise NonFiniteError(f"non-finite variable {getattr(v, 'path', v.name)} after epoch {epoch + 1}: "
                                 f"no checkpoint is written")


def _print_metrics(where, metrics, names):
    shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in names if k in metrics)
    print(f"{where}: {shown}", flush=True)
