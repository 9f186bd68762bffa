"""Optimizer groups: one Keras optimizer per variable group, each with its own learning rate,
weight decay and gradient clipping, and the learning-rate schedules.

The learning rate of group g at (fractional) epoch e and global iteration i (0-based) is
``base_lr(g) * schedule(e, i) * warmup(e)`` where ``base_lr(g)`` is ``--group_lrs[g]`` if given,
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
    if cfg.lr_warmup_epochs > 0 and epoch < cfg.lr_warmup_epochs:
        factor *= (epoch + 1e-8) / cfg.lr_warmup_epochs
    return factor


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

    def apply(self, grads):
        variables = self.group.variables
        if self.l2:
            grads = [g if g is None else g + self.l2 * tf.cast(v, g.dtype) for g, v in zip(grads, variables)]
        self.optimizer.apply_gradients(zip(grads, variables))


def _make_optimizer(cfg, lr, weight_decay, name):
    clip = {}
    if cfg.clip_grad_value:
        clip["clipvalue"] = cfg.clip_grad_value
    if cfg.clip_grad_norm:
        clip["global_clipnorm"] = cfg.clip_grad_norm
    wd = weight_decay or None
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr, epsilon=cfg.adam_epsilon, weight_decay=wd, name=name, **clip)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, epsilon=cfg.adam_epsilon, weight_decay=weight_decay, name=name, **clip)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, weight_decay=wd, name=name, **clip)
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
