"""Images/s of the training input pipeline (gather + JPEG decode + augmentation at 224 px) per format.

Builds a synthetic class-folder tree of photo-sized JPEGs (500 x 375, noisy gradients, ~CUB
size), converts it with the folder converter to HDF5 raw, HDF5 JPEG, TFRecord raw and TFRecord
JPEG (256 px: square for raw, short side for JPEG), then times ``dmltf.data.train_dataset``
with the ``dmltf`` augmentation preset (RandomResizedCrop 224 + flip) over whole epochs, after
one warm-up batch. Also prints the converter's own images/s. Nothing is downloaded.

    python bench/input_pipeline.py [--images 1200] [--classes 60] [--epochs 3] [--workers 2]
"""
import argparse
import contextlib
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dmltf import data  # noqa: E402
from dmltf.data.raw import common, folder  # noqa: E402


def make_tree(root, num_images, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:375, 0:500]
    for i in range(num_images):
        c = i % num_classes
        base = (np.stack([x * 0.3, y * 0.4, (x + y) * 0.2], -1) + rng.integers(0, 120, 3)) % 256
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = os.path.join(root, "train", f"class_{c:03d}", f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)


def convert(root, out, fmt, encoding, workers):
    parser = common.make_parser("bench")
    args = parser.parse_args(["--root", root, "--output", out, "--format", fmt, "--encoding", encoding,
                              "--resize", "square" if encoding == "raw" else "short_side", "--size", "256",
                              "--workers", str(workers)])
    policy = common.resolve_args(args)
    splits, class_names, metadata = folder.read(root, ("train",))
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):  # no progress bars
        start = time.perf_counter()
        common.convert(splits, class_names, args, policy, metadata, out=sink)
        return time.perf_counter() - start


def time_pipeline(split, epochs, P, K):
    def epoch_ds(epoch):
        return data.train_dataset(split, data.samplers.get("balanced", P, K), seed=0, epoch=epoch, augmentation="dmltf", image_size=224)

    next(iter(epoch_ds(epochs)))  # warm-up on another epoch: tracing, file handles, RAM cache
    images, start = 0, time.perf_counter()
    for epoch in range(epochs):
        for batch, _ in epoch_ds(epoch):
            images += int(batch.shape[0])
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--classes", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="converter threads")
    parser.add_argument("--P", type=int, default=8)
    parser.add_argument("--K", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmltf-bench-") as tmp:
        root = os.path.join(tmp, "tree")
        make_tree(root, args.images, args.classes)
        print(f"{args.images} JPEGs 500x375, {args.classes} classes; batches P={args.P} x K={args.K}; "
              f"{os.cpu_count()} CPUs; augmentation dmltf (RandomResizedCrop 224 + flip)")
        print(f"{'format':<16}{'convert img/s':>15}{'stored MB':>11}{'in RAM':>8}{'pipeline img/s':>16}")
        for fmt, encoding in (("hdf5", "raw"), ("hdf5", "jpeg"), ("tfrecord", "raw"), ("tfrecord", "jpeg")):
            out = os.path.join(tmp, f"{fmt}_{encoding}" + (".h5" if fmt == "hdf5" else ""))
            seconds = convert(root, out, fmt, encoding, args.workers)
            split = data.open_dataset(out).split("train")
            rate = time_pipeline(split, args.epochs, args.P, args.K)
            print(f"{fmt + ' ' + encoding:<16}{args.images / seconds:>15.0f}{split.stored_bytes / 2**20:>11.1f}"
                  f"{str(split.fits_in_memory()):>8}{rate:>16.0f}")


if __name__ == "__main__":
    main()
