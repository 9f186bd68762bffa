"""Images/s of the training input pipeline (gather + JPEG decode + augmentation at 224 px) per format.

Builds a synthetic class-folder tree of photo-sized JPEGs (500 x 375, noisy gradients, ~CUB
size), converts it with the folder converter to HDF5 raw, HDF5 JPEG, TFRecord raw and TFRecord
JPEG (256 px: square for raw, short side for JPEG), then times ``dmltf.data.train_dataset``
with the ``dmltf`` augmentation preset (RandomResizedCrop 224 + flip) over whole epochs, after
one warm-up batch. Also prints the converter's own images/s. Nothing is downloaded.

Against the step's consumption: next to each format's images/s it prints the images/s one
training step consumes at the same image size and batch (a registry backbone, ``--backbone``,
with a 512-d embedding, Proxy-Anchor and SGD, one traced step timed after a warm-up), or
``--step_images_per_second`` measured elsewhere (e.g. on a GPU), and whether the pipeline keeps
up. It also prints the cores tf.data may use (its threads come from TensorFlow's inter-op pool,
one per core unless configured) and the cores the pipeline kept busy (CPU time / wall time).

    python bench/input_pipeline.py [--images 1200] [--classes 60] [--epochs 3] [--workers 2]
        [--backbone bn_inception] [--step_images_per_second N]
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
    """(images/s, cores kept busy: process CPU seconds per wall second) over ``epochs``."""
    def epoch_ds(epoch):
        return data.train_dataset(split, data.samplers.get("balanced", P, K), seed=0, epoch=epoch, augmentation="dmltf", image_size=224)

    next(iter(epoch_ds(epochs)))  # warm-up on another epoch: tracing, file handles, RAM cache
    images, start, cpu = 0, time.perf_counter(), cpu_seconds()
    for epoch in range(epochs):
        for batch, _ in epoch_ds(epoch):
            images += int(batch.shape[0])
    wall = time.perf_counter() - start
    return images / wall, (cpu_seconds() - cpu) / wall


def cpu_seconds():
    t = os.times()
    return t.user + t.system


def step_images_per_second(backbone, batch_size, num_classes, steps=3):
    """Images/s of one traced training step (forward, Proxy-Anchor, backward, SGD update) of
    ``backbone`` at 224 px, timed over ``steps`` after a warm-up step (tracing)."""
    import keras
    import tensorflow as tf

    from dmltf import losses
    from dmltf.models import build_embedding_model

    model = build_embedding_model(backbone, (224, 224, 3), embedding_dim=512)
    loss_fn = losses.get("proxy_anchor", num_classes=num_classes, embedding_dim=512)
    optimizer = keras.optimizers.SGD(1e-4, momentum=0.9)
    variables = model.trainable_variables + loss_fn.trainable_variables

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (batch_size, 224, 224, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, num_classes, batch_size))
    step(images, labels).numpy()  # tracing
    start = time.perf_counter()
    for _ in range(steps):
        step(images, labels).numpy()
    return batch_size * steps / (time.perf_counter() - start)


def tf_data_cores():
    """(cores this process may run on, threads of the inter-op pool tf.data's maps run on)."""
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pool = tf.config.threading.get_inter_op_parallelism_threads() or cores  # 0: one per core
    return cores, pool


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--classes", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="converter threads")
    parser.add_argument("--P", type=int, default=8)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--backbone", default="bn_inception", help="registry backbone whose training step is timed")
    parser.add_argument("--step_images_per_second", type=float, default=0.0,
                        help="the training step's consumption measured elsewhere (e.g. a GPU); 0: measure here")
    args = parser.parse_args()
    batch = args.P * args.K
    if args.step_images_per_second > 0:
        step_rate, step_what = args.step_images_per_second, "given with --step_images_per_second"
    else:
        step_rate = step_images_per_second(args.backbone, batch, args.classes)
        step_what = f"{args.backbone} training step at 224 px, batch {batch}, measured here"
    cores, pool = tf_data_cores()
    with tempfile.TemporaryDirectory(prefix="dmltf-bench-") as tmp:
        root = os.path.join(tmp, "tree")
        make_tree(root, args.images, args.classes)
        print(f"{args.images} JPEGs 500x375, {args.classes} classes; batches P={args.P} x K={args.K}; "
              f"{os.cpu_count()} CPUs, {cores} usable; tf.data maps (num_parallel_calls=AUTOTUNE) on an inter-op "
              f"pool of {pool} threads; augmentation dmltf (RandomResizedCrop 224 + flip)")
        print(f"step consumption: {step_rate:.1f} images/s ({step_what})")
        print(f"{'format':<16}{'convert img/s':>15}{'stored MB':>11}{'in RAM':>8}{'pipeline img/s':>16}"
              f"{'cores busy':>12}{'step img/s':>12}{'keeps up':>10}")
        for fmt, encoding in (("hdf5", "raw"), ("hdf5", "jpeg"), ("tfrecord", "raw"), ("tfrecord", "jpeg")):
            out = os.path.join(tmp, f"{fmt}_{encoding}" + (".h5" if fmt == "hdf5" else ""))
            seconds = convert(root, out, fmt, encoding, args.workers)
            split = data.open_dataset(out).split("train")
            rate, busy = time_pipeline(split, args.epochs, args.P, args.K)
            print(f"{fmt + ' ' + encoding:<16}{args.images / seconds:>15.0f}{split.stored_bytes / 2**20:>11.1f}"
                  f"{str(split.fits_in_memory()):>8}{rate:>16.0f}{busy:>12.1f}{step_rate:>12.1f}"
                  f"{'yes' if rate >= step_rate else 'no':>10}")


if __name__ == "__main__":
    main()
