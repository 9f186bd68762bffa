"""Checks of a run's configuration made before anything is trained, embedded or written.

Every check raises a ValueError with a one-line message naming the flag, so a configuration
mistake fails at start-up (``train/main.py`` prints ``error: <message>`` and exits 1) instead
of after the training or the embedding it would have spoilt; nothing is created on disk.
"""
import os

from dmltf import evaluation
from dmltf.methods.base import LOSS_SCOPES
from dmltf.training.trainer import NONFINITE_ACTIONS


def check_run(cfg):
    """Raises a one-line ValueError for the first mistake of a training run of ``cfg``: the
    non-finite action, the loss scope, the epochs, the metric names, their averaging and k-means,
    the best metric, the logdir. (The sampler's
    batch against the split's classes and the replicas is the Trainer's first check, made
    before it writes anything.)"""
    if cfg.nonfinite not in NONFINITE_ACTIONS:
        raise ValueError(f"--nonfinite must be one of {', '.join(NONFINITE_ACTIONS)}, got {cfg.nonfinite!r}")
    if cfg.loss_scope not in LOSS_SCOPES:
        raise ValueError(f"--loss_scope must be one of {', '.join(LOSS_SCOPES)}, got {cfg.loss_scope!r}")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {cfg.epochs}: a run without training has no model to evaluate")
    metrics = check_metric_flag(cfg.eval_metrics, "--eval_metrics")
    if cfg.eval_average not in evaluation.metrics.AVERAGES:
        raise ValueError(f"--eval_average must be one of {', '.join(evaluation.metrics.AVERAGES)}, got "
                         f"{cfg.eval_average!r}")
    try:
        evaluation.clustering.check_backend(cfg.eval_kmeans)
    except ValueError as e:
        raise ValueError(f"--eval_kmeans: {e}") from None
    if cfg.best_metric not in metrics:
        raise ValueError(f"--best_metric={cfg.best_metric} is not among --eval_metrics ({', '.join(metrics)}), "
                         f"so no best checkpoint could be chosen")
    if evaluation.metrics.lower_is_better(cfg.best_metric):
        raise ValueError(f"--best_metric={cfg.best_metric} is better when lower, and the best checkpoint keeps the "
                         f"highest score: choose a higher-is-better metric (recall@K, map@r, ...)")
    check_directory(cfg.logdir, f"--logdir={cfg.logdir}", may_create=True)


def check_metric_flag(names, flag):
    """``names`` as ``dmltf.evaluation`` checks them (ordered, without repeats); the error names ``flag``."""
    try:
        return tuple(evaluation.check_metrics(names))
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None


def check_directory(directory, what, may_create=False):
    """``directory`` exists and is writable or, with ``may_create``, can be created: its nearest
    existing ancestor is a writable directory. ``what`` starts the message (``--flag=value``)."""
    directory = os.path.abspath(directory)
    if not os.path.exists(directory):
        if not may_create:
            raise ValueError(f"{what}: directory {directory} does not exist")
        while not os.path.exists(directory):
            directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{what}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: directory {directory} is not writable")


def check_output_file(path, flag):
    """``path`` (the value of ``flag``) can be written: not a directory, in an existing writable directory."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}={path} is a directory, not a file name")
    check_directory(os.path.dirname(os.path.abspath(path)), f"{flag}={path}")
