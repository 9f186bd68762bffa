"""Forward + backward time of every pair-based loss at B=180, D=512 on CPU, next to one
training step of a ResNet-50 embedding model.

Each loss runs in a ``tf.function`` on a 45 classes x 4 samples batch; the first (tracing)
call is a warm-up and is excluded; the figure is the median of ``--repeats`` timed calls.
The ResNet-50 step (``bench/backbone_speed.training_step``: Keras ResNet50, avg pooling,
Dense(512) + L2 normalisation, SGD, triplet+semi-hard loss) runs at ``--model_batch``
224x224 images, by default the losses' batch of 180: measured here at about 24 s per step with
an 18.4 GB peak RSS on 2 cores, so pass a smaller batch on a smaller machine (the printout
says when the batch differs).

    python bench/loss_speed.py [--repeats 5] [--model_batch 180] [--skip_model] [--losses instance ...]

``--losses`` times only the rows whose names start with one of the words given.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from backbone_speed import training_step  # noqa: E402  (the same step the backbone bench times)
from dmltf import losses  # noqa: E402

BATCH, DIM = 180, 512

# Loss name -> constructor kwargs (defaults unless a default needs a per-class count).
LOSSES = {
    "contrastive": {},
    "triplet": {"miner": "semi_hard"},
    "triplet (all triplets)": {},
    "margin": {},
    "lifted_structure": {},
    "generalized_lifted_structure": {},
    "npair": {},
    "multi_similarity": {},
    "circle": {},
    "angular": {},
    "histogram": {},
    "quadruplet": {},
    "margin_sample_mining": {},
    "eml": {},
    "adapted_triplet": {},
    "smooth_ap": {},
    "ntxent": {},
    "ntxent (+ lp embedding regularizer)": {"embedding_regularizer": "lp"},
    "supcon": {},
    "snr_contrastive": {},
    "tuplet_margin": {},
    "intra_pair_variance": {},
    "nca": {},
    "fast_ap": {},
    "dynamic_soft_margin": {},
    "ranked_list": {},
    "pnp": {},
    "pn": {},
    "threshold_consistent_margin": {},
    "soft_nearest_neighbor": {},
    "multiple_losses (tuplet_margin + ipv)": {"losses": ("tuplet_margin", "intra_pair_variance")},
    "xbm (multi_similarity, 1024 rows, full)": {"loss": "multi_similarity", "memory_size": 1024, "warmup_steps": 0},
    "instance": {},
    "centroid_triplet": {},
    # 5 subsets of 90 scored by a contrastive loss each: 5 x the pair loss's O(B^2) memory
    "contrastive (maximum_loss miner, 5 x 90)": {"miner": {"name": "maximum_loss", "config": {
        "loss": "contrastive", "output_batch_size": BATCH // 2, "num_trials": 5, "seed": 0}}},
}


def median_time(fn, repeats):
    fn()  # trace + warm-up, excluded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loss_step(loss, labels, x):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(labels, x)
        return tape.gradient(value, x)

    return lambda: step().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model_batch", type=int, default=BATCH)
    parser.add_argument("--skip_model", action="store_true")
    parser.add_argument("--losses", nargs="+", default=None, help="only the rows starting with these names")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = tf.constant(np.repeat(np.arange(BATCH // 4), 4))
    x = tf.constant(rng.normal(size=(BATCH, DIM)).astype("float32"))
    print(f"forward+backward, B={BATCH}, D={DIM}, CPU ({os.cpu_count()} cores), median of {args.repeats}")
    print(f"{'loss':45s} {'ms':>9s}")
    for name, kwargs in LOSSES.items():
        if args.losses and not any(name.startswith(prefix) for prefix in args.losses):
            continue
        loss = losses.get(name.split(" ")[0], **kwargs)
        if name.startswith("xbm"):
            for _ in range(6):  # fill the memory: 6 x 180 > 1024 rows
                loss(labels, x)
        print(f"{name:45s} {1000 * median_time(loss_step(loss, labels, x), args.repeats):9.1f}", flush=True)
    if not args.skip_model:
        seconds = median_time(training_step("resnet50", 224, args.model_batch, freeze_bn=False),
                              max(1, args.repeats // 2))
        print(
            f"ResNet-50 + Dense({DIM}) training step, batch {args.model_batch} x 224x224"
            + ("" if args.model_batch == BATCH else f" (NOT the losses' {BATCH})")
            + f": {1000 * seconds:.0f} ms ({1000 * seconds / args.model_batch:.0f} ms/image)"
        )


if __name__ == "__main__":
    main()
