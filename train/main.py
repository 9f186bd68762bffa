"""Train a dmltf method: ``python train/main.py --flagfile=train/configs/NAME.cfg [--flag=value ...]``.

Every hyperparameter is a flag (``--helpfull`` lists them); defaults come from ``config.py``.
With ``--baselines`` the final table also shows raw pixels and the untrained model.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from absl import app, flags, logging  # noqa: E402

import config  # noqa: E402


def define_flags():
    for name, (default, help_text) in config.all_flags().items():
        if isinstance(default, bool):
            flags.DEFINE_bool(name, default, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, help_text)
        elif isinstance(default, list):
            flags.DEFINE_list(name, default, help_text)
        else:
            flags.DEFINE_string(name, default, help_text)


def configure_devices(cpu_replicas):
    """Must run before TensorFlow initialises its devices."""
    import tensorflow as tf

    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)


def run(cfg):
    """Train and evaluate as ``cfg`` says; returns (trainer, rows of the results table)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from dmltf.training import builders
    from dmltf.training.trainer import Trainer, embed_split, evaluate_embeddings, make_strategy

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    if cfg.precision != "float32":
        keras.mixed_precision.set_global_policy(cfg.precision)
    strategy = make_strategy(cfg.strategy)
    train_split, eval_split = builders.load_splits(cfg)
    info = builders.DatasetInfo(train_split.num_classes, builders.input_shape(cfg, train_split))
    preprocessing = builders.preprocessing(cfg)
    trainer = Trainer(cfg, lambda: builders.build_method(cfg, info), train_split, eval_split,
                      preprocessing=preprocessing, strategy=strategy)
    rows = []
    if cfg.baselines:
        pixels = eval_split.load().images.reshape(eval_split.num_examples, -1).astype(np.float32)
        rows.append(("raw pixels", evaluate_embeddings(pixels, eval_split.labels, cfg)))
        rows.append(("untrained", evaluate_embeddings(*embed_split(trainer.method, eval_split, cfg, preprocessing), cfg)))
    rows.append(("trained", trainer.fit()))
    if cfg.export and trainer.is_chief:
        print(f"exported to {trainer.export()}")
    return trainer, rows


def format_table(rows, metrics):
    header = f"{'':<12}" + "".join(f"{m:>13}" for m in metrics)
    lines = [header] + [f"{name:<12}" + "".join(f"{r.get(m, float('nan')):>13.4f}" for m in metrics) for name, r in rows]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cfg = config.make(**{name: flags.FLAGS[name].value for name in config.all_flags()})
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint/export chatter
    configure_devices(cfg.cpu_replicas)
    trainer, rows = run(cfg)
    if trainer.is_chief:
        print(format_table(rows, cfg.eval_metrics))
        print(f"TensorBoard: tensorboard --logdir {cfg.logdir}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
