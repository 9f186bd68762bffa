"""Flags and loading shared by train/evaluate.py and train/infer.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter

from absl import flags  # noqa: E402

flags.DEFINE_string("run", "", "A train/main.py --logdir (uses its config.json and a checkpoint).")
flags.DEFINE_enum("which", "best", ["best", "last"], "With --run: the best-metric or the last checkpoint.")
flags.DEFINE_string("model", "", "An exported embedding_model.keras (input_spec.json beside it).")
flags.DEFINE_integer("batch_size", 256, "Images per forward pass.")
FLAGS = flags.FLAGS


def load_embedder():
    """(Embedder, training config or None) from --run or --model."""
    from dmltf.training import inference

    if bool(FLAGS.run) == bool(FLAGS.model):
        raise ValueError("give exactly one of --run or --model")
    if FLAGS.run:
        import config

        return inference.from_run(FLAGS.run, FLAGS.which, FLAGS.batch_size, defaults=vars(config.make()))
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
