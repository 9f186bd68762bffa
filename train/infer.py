"""Embed images or a dataset split with a trained embedder; write .npy or .h5.

    python train/infer.py --model=runs/demo/export/embedding_model.keras --images='photos/*.jpg' --output=emb.h5
    python train/infer.py --run=runs/cars --dataset=data/cars196.h5 --split=test --output=test.npy

A .h5 output holds ``embeddings`` and ``labels`` (dataset) or ``paths`` (images); a .npy output
holds the embeddings only. Output is written under a temporary name and renamed when complete.
"""
import glob
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags, logging  # noqa: E402

import cli  # noqa: E402

flags.DEFINE_string("images", "", "Glob of image files (JPEG or PNG) to embed.")
flags.DEFINE_string("dataset", "", "HDF5 file or TFRecord directory to embed a split of.")
flags.DEFINE_string("split", "test", "Split of --dataset.")
flags.DEFINE_string("output", "embeddings.npy", "Output file: .npy or .h5.")
FLAGS = flags.FLAGS


def images_split(pattern, workdir):
    """The images of ``pattern`` as a JPEG split of any sizes, via the dmltf writer."""
    import numpy as np
    from PIL import Image

    from dmltf import data

    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"--images={pattern!r} matches no file")
    path = os.path.join(workdir, "images.h5")
    with data.DatasetWriter(path, format="hdf5", encoding="jpeg") as writer:
        writer.begin_split("images", num_examples=len(paths))
        for p in paths:
            try:
                image = np.asarray(Image.open(p).convert("RGB"))
            except OSError as e:
                raise ValueError(f"cannot read image {p}: {e}") from e
            writer.add(image, 0)
        writer.end_split()
    return data.open_dataset(path).split("images"), paths


def check_output(path):
    """Fails on an --output that could not be written, before the embedding."""
    from dmltf.training import validation

    if os.path.splitext(path)[1] not in (".npy", ".h5"):
        raise ValueError(f"--output must end in .npy or .h5, got {path!r}")
    validation.check_output_file(path, "--output")


def write_output(path, embeddings, labels=None, paths=None):
    ext = os.path.splitext(path)[1]
    tmp = f"{path}.tmp{ext}"
    if ext == ".npy":
        import numpy as np

        np.save(tmp, embeddings)
    else:
        import h5py

        with h5py.File(tmp, "w") as f:
            f["embeddings"] = embeddings
            if labels is not None:
                f["labels"] = labels
            if paths is not None:
                f["paths"] = [p.encode() for p in paths]
    os.replace(tmp, path)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if bool(FLAGS.images) == bool(FLAGS.dataset) and not (not FLAGS.images and FLAGS.run):
        raise app.UsageError("give --images or --dataset (or neither, with --run, for the run's eval split)")
    check_output(FLAGS.output)
    embedder, cfg = cli.load_embedder()
    with tempfile.TemporaryDirectory() as workdir:
        if FLAGS.images:
            split, paths = images_split(FLAGS.images, workdir)
            embeddings, _ = embedder.embed(split)
            write_output(FLAGS.output, embeddings, paths=paths)
        else:
            split = cli.open_split(FLAGS.dataset, FLAGS.split, cfg)
            embeddings, labels = embedder.embed(split)
            write_output(FLAGS.output, embeddings, labels=labels)
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
