"""Flags and loading shared by train/evaluate.py and train/infer.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter

import zipfile  # noqa: E402

from absl import app, flags  # noqa: E402

from dmltf import startup  # noqa: E402

startup.start_tensorflow()
flags.DEFINE_string("run", "", "A train/main.py --logdir (uses its config.json and a checkpoint).")
flags.DEFINE_enum("which", "best", ["best", "last"], "With --run: the best-metric or the last checkpoint.")
flags.DEFINE_string("model", "", "An exported embedding_model.keras (input_spec.json beside it).")
flags.DEFINE_integer("batch_size", 256, "Images per forward pass.")
flags.DEFINE_bool("verbose", False, "Keep TensorFlow's native start-up notices on stderr (dropped by default; "
                  "read from the command line itself before TensorFlow starts).")
FLAGS = flags.FLAGS


def run(main):
    """``app.run(main)``, with the expected failures (names, paths, files the user gave: ValueError,
    OSError) as one line ``error: ...`` and exit status 1 instead of a traceback."""
    def main_with_errors(argv):
        try:
            return main(argv)
        except (ValueError, OSError) as e:
            sys.exit(f"error: {e}")

    app.run(main_with_errors)


def load_embedder():
    """(Embedder, training config or None) from --run or --model."""
    from dmltf.training import inference

    if bool(FLAGS.run) == bool(FLAGS.model):
        raise ValueError("give exactly one of --run or --model")
    if FLAGS.run:
        import config

        return inference.from_run(FLAGS.run, FLAGS.which, FLAGS.batch_size, defaults=vars(config.make()))
    # Keras says "File not found" for an existing file that is not a model.
    if os.path.exists(FLAGS.model) and not zipfile.is_zipfile(FLAGS.model):
        raise ValueError(f"--model={FLAGS.model} is not a Keras model file (an exported embedding_model.keras, "
                         f"which is a zip archive)")
    return inference.from_export(FLAGS.model, FLAGS.batch_size), None


def open_split(dataset, split, cfg):
    """The split to embed: --dataset/--split, else the training run's evaluation split."""
    from dmltf.training import builders

    if dataset:
        if dataset == "digits":
            raise ValueError("--dataset=digits is only available through --run (its protocol decides the split)")
        from dmltf import data

        return data.open_dataset(dataset).split(split)
    if cfg is None:
        raise ValueError("--dataset is required with --model")
    return builders.load_splits(cfg)[1]
