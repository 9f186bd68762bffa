"""DVML over semi-hard triplet next to semi-hard triplet alone on the bundled digits (zero-shot:
train 0-4, test 5-9), same backbone (small CNN), embedding size, batches, optimiser and epochs.
Prints one table; the issue's bar: DVML not worse than triplet alone by more than 0.02 MAP@R.

    python bench/dvml_digits.py [--epochs 20] [--seeds 0 1 2]
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import config  # noqa: E402
from dmltf.training.experiment import run  # noqa: E402

METRICS = ["map@r", "recall@1", "r_precision", "nmi"]
ROWS = {
    "triplet (l2-normalised)": dict(method="metric_learner", l2_normalize=True),
    "triplet (raw)": dict(method="metric_learner", l2_normalize=False),
    "dvml paper + triplet": dict(method="dvml", dvml_mode="paper"),
    "dvml paper, recon mean": dict(method="dvml", dvml_mode="paper", dvml_recon_reduction="mean"),
    "dvml reference + triplet": dict(method="dvml", dvml_mode="reference", dvml_weight_decay=5e-3,
                                     group_lrs=["decoder:1e-2", "classifier:1e-3"]),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--phase1_epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    results = {}
    for name, extra in ROWS.items():
        for seed in args.seeds:
            cfg = config.make(dataset="digits", digits_protocol="zero_shot", backbone="small_cnn", embedding_dim=32,
                              loss="triplet", miner="semi_hard", distance="squared_euclidean",
                              loss_triplet_margin=1.0, classes_per_batch=5, samples_per_class=8,
                              optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=args.epochs,
                              dvml_phase1_epochs=args.phase1_epochs, eval_every=0, eval_metrics=METRICS,
                              progress="none", export=False, tb_neighbours=0, tb_projector_points=0, seed=seed,
                              logdir=tempfile.mkdtemp(prefix="dvml_digits_"), **extra)
            _, rows = run(cfg)
            results.setdefault(name, []).append(rows[-1][1])
    print(f"digits zero-shot, small_cnn, emb 32, P x K = 5 x 8, Adam 1e-3, {args.epochs} epochs "
          f"(DVML phase 1: {args.phase1_epochs}), seeds {args.seeds}")
    print(f"{'':<26}" + "".join(f"{m:>13}" for m in METRICS))
    for name, runs in results.items():
        print(f"{name:<26}" + "".join(f"{np.mean([r[m] for r in runs]):>13.4f}" for m in METRICS)
              + "   map@r per seed: " + " ".join(f"{r['map@r']:.4f}" for r in runs))


if __name__ == "__main__":
    main()
