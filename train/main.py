"""Train a dmltf method: ``python train/main.py --flagfile=train/configs/NAME.cfg [--flag=value ...]``.

Every hyperparameter is a flag (``--helpfull`` lists them); defaults come from ``config.py``.
With ``--baselines`` the final table also shows raw pixels and the untrained model.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter

from absl import app, flags, logging  # noqa: E402

from dmltf import startup  # noqa: E402

startup.start_tensorflow()
import config  # noqa: E402


def define_flags():
    for name, (default, help_text) in config.all_flags().items():
        if isinstance(default, bool):
            flags.DEFINE_bool(name, default, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, help_text)
        elif isinstance(default, (list, tuple)):  # config.make turns the strings back into numbers
            flags.DEFINE_list(name, [str(v) for v in default], help_text)
        else:
            flags.DEFINE_string(name, default, help_text)


def config_from_flags():
    """The run's configuration from the parsed flags."""
    return config.make(**{name: flags.FLAGS[name].value for name in config.all_flags()})


def configure_devices(cpu_replicas, threads=0):
    """Must run before TensorFlow initialises its devices (``--cpu_replicas``) and its runtime
    (``--threads``, :func:`dmltf.training.trainer.configure_threads`)."""
    import tensorflow as tf

    from dmltf.training.trainer import configure_threads

    configure_threads(threads)
    if threads:
        print(f"threads: {tf.config.threading.get_intra_op_parallelism_threads()} intra-op, "
              f"{tf.config.threading.get_inter_op_parallelism_threads()} inter-op", flush=True)
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cfg = config_from_flags()
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint/export chatter
    try:
        configure_devices(cfg.cpu_replicas, cfg.threads)
    except ValueError as e:
        sys.exit(f"error: {e}")
    from dmltf.training.experiment import build_trainer, format_table, run
    from dmltf.training.trainer import NonFiniteError

    try:  # configuration mistakes (names, paths, shapes) surface here, before any training
        trainer = build_trainer(cfg)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    try:
        trainer, rows = run(cfg, trainer=trainer)
    except NonFiniteError as e:  # --nonfinite=stop: the run's finite checkpoints are kept
        sys.exit(f"error: {e}")
    if trainer.is_chief:
        print(format_table(rows, cfg.eval_metrics))
        print(f"training time: {trainer.training_seconds:.1f} s")
        print(f"TensorBoard: tensorboard --logdir {cfg.logdir}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
