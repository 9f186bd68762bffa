"""Where the resident memory of a small run goes: peak RSS after each stage of one training run.

A three-layer CNN (``small_cnn``) on 28x28 grayscale images (a synthetic raw HDF5 dataset of
``--classes`` x ``--per_class`` images per split, written by a child process so that writing
costs this process nothing), trained through the real ``Trainer``; after each stage this prints
the process's peak resident set (``VmHWM`` of /proc/self/status, the figure ``/usr/bin/time -v``
reports), what the stage added to it, and the current resident set (``VmRSS``) with its anonymous
(heap, tensors) and file-backed (shared libraries' pages) parts:

    python                interpreter + numpy
    import tensorflow     tensorflow + keras (dmltf.startup, as every entry point starts)
    import dmltf          the trainer, builders, evaluation, their imports (h5py, sklearn, ...)
    splits + trainer      the HDF5 file, the in-memory cache of both splits (uint8), the model,
                          losses, optimizers, checkpoint managers
    first epoch           tf.data pipeline + tracing of the training step + the steps
    eval: embed split     embedding the eval split (tf.data, the traced embed)
    eval: metrics         kNN (k = the largest class for map@r), clustering metrics
    eval: all, again      the whole evaluation as the trainer runs it (+ TensorBoard summaries)
    epoch / evaluation N  the steady state: more epochs, evaluations and checkpoints

    python bench/memory.py [--epochs 3] [--classes 10] [--per_class 1000] [--steps 50]

Found with it (defaults, 2 CPU cores): TensorFlow's import is ~650 MiB of the ~1.1 GiB peak
(~390 MiB of it shared-library pages); the evaluation's kNN for map@r (k = 999 neighbours
of each of 10,000 queries) adds ~300 MiB at its peak; the first epoch (tf.data, tracing) ~90
MiB. The TensorBoard pair-distance histograms kept ~110 MiB resident after the first
evaluation (TensorBoard's bucketing builds a one-hot [pairs, 30] float64 matrix for ~450,000
pairs) and raised the peak of the next evaluation by ~120 MiB; dmltf buckets them with numpy
now (``summaries.histogram_buckets``, the same buckets).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402, F401  (the "python" stage: interpreter + numpy)

WRITE = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from dmltf.data.writer import DatasetWriter
rng = np.random.default_rng(0)
classes, per_class = {classes}, {per_class}
with DatasetWriter({path!r}, encoding="raw", class_names=[str(c) for c in range(2 * classes)]) as w:
    for split, offset in (("train", 0), ("test", classes)):
        w.begin_split(split, num_examples=classes * per_class, image_shape=(28, 28, 1))
        for c in range(classes):
            base = rng.integers(0, 255, (28, 28, 1))
            for _ in range(per_class):
                w.add(np.clip(base + rng.integers(-40, 40, (28, 28, 1)), 0, 255).astype(np.uint8), offset + c)
        w.end_split()
"""


def status():
    """{VmHWM, VmRSS, RssAnon, RssFile}: peak and current resident set, the current one's
    anonymous (heap, tensors) and file-backed (shared libraries' pages) parts, in MiB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                values[key] = int(value.split()[0]) / 1024
    return values


class Stages:
    def __init__(self):
        self.last_peak, self.rows = 0.0, []
        print(f"{'stage':<20}{'peak RSS MiB':>14}{'added':>8}{'RSS MiB':>10}{'of it anon':>12}{'file':>7}"
              f"{'seconds':>9}")

    def __call__(self, name, started):
        s = status()
        peak = s["VmHWM"]
        self.rows.append((name, peak, peak - self.last_peak, s["VmRSS"]))
        print(f"{name:<20}{peak:>14.0f}{peak - self.last_peak:>8.0f}{s['VmRSS']:>10.0f}{s['RssAnon']:>12.0f}"
              f"{s['RssFile']:>7.0f}{time.perf_counter() - started:>9.1f}", flush=True)
        self.last_peak = peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10, help="classes per split (zero-shot: disjoint)")
    parser.add_argument("--per_class", type=int, default=1000, help="images per class")
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch (--max_steps_per_epoch)")
    parser.add_argument("--eval_every", type=int, default=1)
    parser.add_argument("--eval_metrics", default="", help="comma-separated (default: config.py's, all ten)")
    args = parser.parse_args()
    stage = Stages()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mnist_like.h5")
        subprocess.run([sys.executable, "-c", WRITE.format(root=ROOT, classes=args.classes,
                                                           per_class=args.per_class, path=path)], check=True)
        t = time.perf_counter()
        stage("python", t)

        t = time.perf_counter()
        from dmltf import startup

        startup.start_tensorflow()
        import keras  # noqa: F401
        stage("import tensorflow", t)

        t = time.perf_counter()
        import config
        from dmltf.training import builders, experiment  # noqa: F401
        from dmltf.training import trainer as trainer_module
        stage("import dmltf", t)

        metrics = args.eval_metrics.split(",") if args.eval_metrics else None
        cfg = config.make(dataset=path, backbone="small_cnn", embedding_dim=64, epochs=args.epochs,
                          max_steps_per_epoch=args.steps, eval_every=args.eval_every, progress="none",
                          export=False, logdir=os.path.join(tmp, "run"), loss="proxy_anchor",
                          **({"eval_metrics": metrics, "best_metric": metrics[0]} if metrics else {}))
        t = time.perf_counter()
        trainer = experiment.build_trainer(cfg)
        train_split, eval_split = trainer.train_split, trainer.eval_split
        train_split.reader(), eval_split.reader()  # the in-memory caches the pipelines use
        stage("splits + trainer", t)

        t = time.perf_counter()
        losses = trainer.train_epoch(0)
        trainer.epoch.assign(1)
        trainer.manager.save(checkpoint_number=1)
        stage("first epoch", t)

        # The first evaluation in its parts (what Trainer.evaluate does).
        t = time.perf_counter()
        embeddings, labels = trainer_module.embed_split(trainer.method, eval_split, cfg, trainer.preprocessing)
        stage("eval: embed split", t)
        t = time.perf_counter()
        trainer_module.evaluate_embeddings(embeddings, labels, cfg)
        stage("eval: metrics", t)
        t = time.perf_counter()
        trainer._evaluate_and_record(0, losses)  # again, with the TensorBoard summaries and best/
        stage("eval: all, again", t)

        for epoch in range(1, args.epochs):
            t = time.perf_counter()
            losses = trainer.train_epoch(epoch)
            trainer.epoch.assign(epoch + 1)
            trainer.manager.save(checkpoint_number=epoch + 1)
            stage(f"epoch {epoch + 1}", t)
            if args.eval_every and (epoch + 1) % args.eval_every == 0:
                t = time.perf_counter()
                trainer._evaluate_and_record(epoch, losses)
                stage(f"evaluation {epoch + 1}", t)
    floor = stage.rows[1][1]
    print(f"\npeak {stage.last_peak:.0f} MiB: TensorFlow's import floor {floor:.0f} MiB "
          f"({100 * floor / stage.last_peak:.0f}%), the run itself {stage.last_peak - floor:.0f} MiB")


if __name__ == "__main__":
    main()
