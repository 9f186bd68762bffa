"""One training run as the flags describe it: what ``train/main.py`` does, callable from Python.

Example (a short run on the bundled digits):
    >>> import config
    >>> from dmltf.training.experiment import run
    >>> trainer, rows = run(config.make(epochs=1, logdir="/tmp/dmltf-doc", export=False, progress="none"))  # doctest: +SKIP
"""
import keras
import numpy as np
import tensorflow as tf

from dmltf.training import builders, validation
from dmltf.training.trainer import (Trainer, embed_split, evaluate_embeddings, linear_probe_split, make_strategy,
                                    resolve_jit_compile)


# tf.distribute's public names for its internal strategy classes.
_PUBLIC_NAMES = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
                 "_DefaultDistributionStrategy": "default strategy"}


def build_trainer(cfg, strategy=None):
    """Seeds, precision policy, strategy, splits and the Trainer for ``cfg``."""
    keras.utils.set_random_seed(cfg.seed)
    # XLA has no deterministic max-pool gradient: under op determinism every pooling backbone
    # would fall back, so an XLA run gives up bit-exact reruns for speed.
    if not resolve_jit_compile(cfg.jit_compile):
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("float32" if cfg.precision == "float32" else cfg.precision)
    strategy = strategy or make_strategy(cfg.strategy)
    train_split, eval_split = builders.load_splits(cfg)
    validation.check_run(cfg)  # every configuration mistake fails before the run starts
    info = builders.DatasetInfo(train_split.num_classes, builders.input_shape(cfg, train_split))
    return Trainer(cfg, lambda: builders.build_method(cfg, info), train_split, eval_split,
                   sampler=builders.build_sampler(cfg), preprocessing=builders.preprocessing(cfg), strategy=strategy)


def run(cfg, strategy=None, trainer=None):
    """Train and evaluate (``trainer``: one already built for ``cfg``); returns
    (trainer, [(row name, metrics)]) with the baselines if asked."""
    trainer = trainer or build_trainer(cfg, strategy)
    if trainer.is_chief:
        replicas = trainer.strategy.num_replicas_in_sync
        name = _PUBLIC_NAMES.get(type(trainer.strategy).__name__, type(trainer.strategy).__name__)
        print(f"{name}: {replicas} replica{'s' if replicas > 1 else ''}", flush=True)
    rows = []
    if cfg.baselines:
        split = trainer.eval_split
        probe_split = linear_probe_split(cfg.eval_metrics, trainer.train_split, split)  # as the trained row's

        def pixels(s):
            return s.load().images.reshape(s.num_examples, -1).astype(np.float32), s.labels

        def untrained(s):
            return embed_split(trainer.method, s, cfg, trainer.preprocessing)

        for name, features in (("raw pixels", pixels), ("untrained", untrained)):
            probe = None if probe_split is None else features(probe_split)
            rows.append((name, evaluate_embeddings(*features(split), cfg, probe)))
    rows.append(("trained", trainer.fit()))
    if cfg.export and trainer.is_chief:
        print(f"exported to {trainer.export()}")
    return trainer, rows


def format_table(rows, metrics):
    widths = [max(13, len(m) + 2) for m in metrics]  # e.g. linear_accuracy is 15 characters
    header = f"{'':<12}" + "".join(f"{m:>{w}}" for m, w in zip(metrics, widths))
    lines = [f"{name:<12}" + "".join(f"{r.get(m, float('nan')):>{w}.4f}" for m, w in zip(metrics, widths))
             for name, r in rows]
    return "\n".join([header, *lines])
