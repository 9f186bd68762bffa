"""Optimizer groups: one Keras optimizer per variable group, each with its own learning rate,
weight decay and gradient clipping, and the learning-rate schedules.

Clipping acts on the group's global-batch gradient, as on one device: Keras optimizers clip
each replica's share before they sum the shares across replicas, so the groups clip here
instead (``--clip_grad_value`` element-wise, ``--clip_grad_norm`` on the group's global norm),
at every iteration or, with ``--clip_grad_steps`` N > 0, at the first N of the run (GeDML's
clipper holds a parameter generator that its first call exhausts, so it clips once: N = 1).

The learning rate of group g at (fractional) epoch e and global iteration i (0-based) is
``base_lr(g) * schedule(e', i) * warmup(e)``, where e' is e, or e - ``--warmup_epochs`` (at least 0)
with ``--lr_schedule_after_warmup`` (GeDML steps no scheduler in its warm-up epochs), and
``base_lr(g)`` is ``--group_lrs[g]`` if given,
else ``--lr * multiplier(g)`` (``--group_lr_multipliers[g]``, else the method's own, e.g. the
loss's reference ``lr_multiplier`` for proxies). ``piecewise`` counts iterations
(PaddlePaddle's piecewise decay: ``--lr_gamma`` to the number of ``--lr_boundaries`` <= i);
the others count epochs.
"""
import math

import keras
import tensorflow as tf

SCHEDULES = ("constant", "step", "multistep", "cosine", "piecewise")
OPTIMIZERS = ("adam", "adamw", "sgd")


def schedule_factor(cfg, epoch, step=0):
    """Multiplier of the base rate at fractional ``epoch`` (0-based) and global iteration ``step``
    (0-based: the number of iterations before this one; only ``piecewise`` reads it)."""
    warmup_factor = 1.0
    if cfg.lr_warmup_epochs > 0 and epoch < cfg.lr_warmup_epochs:
        warmup_factor = (epoch + 1e-8) / cfg.lr_warmup_epochs
    if cfg.lr_schedule_after_warmup:
        epoch = max(epoch - cfg.warmup_epochs, 0.0)
    whole = math.floor(epoch)
    if cfg.schedule == "constant":
        factor = 1.0
    elif cfg.schedule == "step":
        factor = cfg.lr_gamma ** (whole // max(cfg.lr_step_size, 1))
    elif cfg.schedule == "multistep":
        factor = cfg.lr_gamma ** sum(whole >= int(m) for m in cfg.lr_milestones)
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch / max(cfg.epochs, 1), 1.0)))
    elif cfg.schedule == "piecewise":
        if not cfg.lr_boundaries:
            raise ValueError("--schedule=piecewise needs --lr_boundaries (iterations, e.g. 15000,25000)")
        factor = cfg.lr_gamma ** sum(step >= int(b) for b in cfg.lr_boundaries)
    else:
        raise ValueError(f"Unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    return factor * warmup_factor


class GroupOptimizer:
    """One method group with its optimizer and base learning rate."""

    def __init__(self, group, cfg):
        self.group = group
        self.name = group.name
        lrs = parse_group_map(cfg.group_lrs, "group_lrs")
        multipliers = parse_group_map(cfg.group_lr_multipliers, "group_lr_multipliers")
        decays = parse_group_map(cfg.group_weight_decays, "group_weight_decays")
        self.base_lr = lrs.get(self.name, cfg.lr * multipliers.get(self.name, group.lr_multiplier))
        wd = decays.get(self.name, cfg.weight_decay if group.weight_decay is None else group.weight_decay)
        if cfg.weight_decay_mode not in ("decoupled", "l2"):
            raise ValueError(f"--weight_decay_mode must be decoupled or l2, got {cfg.weight_decay_mode!r}")
        self.l2 = wd if cfg.weight_decay_mode == "l2" else 0.0
        self.clip_value, self.clip_norm, self.clip_steps = cfg.clip_grad_value, cfg.clip_grad_norm, cfg.clip_grad_steps
        if self.clip_steps < 0:
            raise ValueError(f"--clip_grad_steps must be >= 0, got {self.clip_steps}")
        self.optimizer = _make_optimizer(cfg, self.base_lr, 0.0 if self.l2 else wd, self.name)
        if cfg.precision == "mixed_float16":
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer, name=f"{self.name}_loss_scale")
        self.optimizer.build(group.variables)

    @property
    def loss_key(self):
        return self.group.loss_key

    def set_learning_rate(self, cfg, epoch, step):
        """The rate of the iteration ``step`` (global, 0-based) in fractional ``epoch``."""
        self.optimizer.learning_rate = self.base_lr * schedule_factor(cfg, epoch, step)

    @property
    def learning_rate(self):
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def clips_at(self, step):
        """Whether the update of global iteration ``step`` (0-based) is clipped (a Python bool: the
        trainer traces a clipping step and a plain one, since no cross-replica sum may run inside
        a tf.cond, and a select would clip every later step for nothing)."""
        return bool(self.clip_value or self.clip_norm) and (not self.clip_steps or step < self.clip_steps)

    def apply(self, grads, clip):
        """Apply this replica's share ``grads`` of the gradient, in replica context, clipped if
        ``clip`` (see :meth:`clips_at`); the optimizer sums the shares of all replicas."""
        variables = self.group.variables
        if clip:
            grads = self._clipped(grads)
        if self.l2:  # after clipping, as PyTorch's optimizers add weight_decay * w inside step()
            # Each replica adds 1/N of it: the optimizer sums the replicas' shares.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            grads = [g if g is None else g + (self.l2 / replicas) * tf.cast(v, g.dtype) for g, v in zip(grads, variables)]
        self.optimizer.apply_gradients(zip(grads, variables))

    def _clipped(self, grads):
        """The shares whose sum over replicas is the clipped sum of ``grads`` (None stays None)."""
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx else 1
        present = [i for i, g in enumerate(grads) if g is not None]
        local = [tf.convert_to_tensor(grads[i]) for i in present]  # IndexedSlices as dense
        total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local) if replicas > 1 else local
        # Under float16 loss scaling the gradients carry the loss scale, so the thresholds do too.
        unit = 1.0
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            unit = tf.cast(self.optimizer.dynamic_scale, tf.float32)
        clipped = local
        if self.clip_value:  # element-wise: each replica contributes 1/N of the clipped sum
            total = [tf.clip_by_value(t, -self.clip_value * unit, self.clip_value * unit) for t in total]
            clipped = [t / replicas for t in total]
        if self.clip_norm:  # one factor from the global-batch norm scales every share alike
            norm = tf.cast(tf.linalg.global_norm(total), tf.float32)
            factor = tf.minimum(1.0, self.clip_norm * unit / tf.maximum(norm, 1e-30))
            clipped = [c * tf.cast(factor, c.dtype) for c in clipped]
        # A non-finite gradient is left as it is, for the loss scaling (or --nonfinite) to see.
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in total])
        out = list(grads)
        for i, c, l in zip(present, clipped, local):
            out[i] = tf.where(finite, c, l)
        return out


def _make_optimizer(cfg, lr, weight_decay, name):
    wd = weight_decay or None
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr, epsilon=cfg.adam_epsilon, weight_decay=wd, name=name)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, epsilon=cfg.adam_epsilon, weight_decay=weight_decay, name=name)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, weight_decay=wd, name=name)
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def parse_group_map(entries, what):
    """['backbone:0.1', 'loss:100'] -> {'backbone': 0.1, 'loss': 100.0}."""
    out = {}
    for entry in entries:
        group, sep, value = entry.partition(":")
        try:
            out[group.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--{what}: expected entries like name:value, got {entry!r}")
    return out
