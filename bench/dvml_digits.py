"""DVML over semi-hard triplet next to semi-hard triplet alone on the bundled digits (zero-shot:
train 0-4, test 5-9): same backbone (small CNN), embedding size, batches, optimiser and epochs.
The issue's bar: DVML not worse than triplet alone by more than 0.02 MAP@R.

Two "triplet alone" rows: the plain MetricLearner (backbone -> Dense), and DVML's own network with
lambdas (0, 0, 0, 1), i.e. only the invariant triplet term (feature BN, three heads, decoder all
present; the same control run, seed for seed). Differences are paired by seed; +- is one standard
error of the mean difference. Per-seed MAP@R spreads by about +-0.05, so use many seeds. The
paper rows differ only in the reconstruction's form (``--dvml_recon_reduction``; mean is the
default).

    python bench/dvml_digits.py [--epochs 20] [--phase1_epochs 5] [--seeds 0 1 2 ...]
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
TRIPLET_ONLY = dict(method="dvml", dvml_lambdas_phase1=["0", "0", "0", "1"], dvml_lambdas_phase2=["0", "0", "0", "1"])
ROWS = {
    "triplet (MetricLearner)": dict(method="metric_learner", l2_normalize=False),
    "triplet (DVML network)": TRIPLET_ONLY,
    "dvml paper (recon mean)": dict(method="dvml", dvml_mode="paper", dvml_recon_reduction="mean"),
    "dvml paper, recon sum": dict(method="dvml", dvml_mode="paper", dvml_recon_reduction="sample_sum"),
    "dvml paper, recon norm": dict(method="dvml", dvml_mode="paper", dvml_recon_reduction="norm"),
    "dvml reference": dict(method="dvml", dvml_mode="reference", dvml_weight_decay=5e-3,
                           group_lrs=["decoder:1e-2", "classifier:1e-3"]),
}
BASELINES = ("triplet (MetricLearner)", "triplet (DVML network)")


def train(seed, epochs, phase1_epochs, extra):
    cfg = config.make(dataset="digits", digits_protocol="zero_shot", backbone="small_cnn", embedding_dim=32,
                      loss="triplet", miner="semi_hard", distance="squared_euclidean", loss_triplet_margin=1.0,
                      classes_per_batch=5, samples_per_class=8, optimizer="adam", lr=1e-3, weight_decay=0.0,
                      epochs=epochs, dvml_phase1_epochs=phase1_epochs, eval_every=0, eval_metrics=METRICS,
                      progress="none", export=False, tb_neighbours=0, tb_projector_points=0, seed=seed,
                      logdir=tempfile.mkdtemp(prefix="dvml_digits_"), **extra)
    return run(cfg)[1][-1][1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--phase1_epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    results = {name: [train(seed, args.epochs, args.phase1_epochs, ROWS[name]) for seed in args.seeds]
               for name in args.rows}
    print(f"digits zero-shot, small_cnn, emb 32, P x K = 5 x 8, Adam 1e-3, {args.epochs} epochs "
          f"(DVML phase 1: {args.phase1_epochs}), {len(args.seeds)} seeds {args.seeds}")
    baselines = [b for b in BASELINES if b in results]
    print(f"{'':<26}" + "".join(f"{m:>12}" for m in METRICS)
          + "".join(f"  map@r - {b[9:-1]:<16}" for b in baselines))
    for name, runs in results.items():
        maps = np.array([r["map@r"] for r in runs])
        line = f"{name:<26}" + "".join(f"{np.mean([r[m] for r in runs]):>12.4f}" for m in METRICS)
        for base in baselines:
            diff = maps - np.array([r["map@r"] for r in results[base]])
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            line += f"  {diff.mean():+.4f} +- {se:.4f}      "
        print(line)
    print("map@r per seed:")
    for name, runs in results.items():
        print(f"  {name:<24}" + " ".join(f"{r['map@r']:.3f}" for r in runs))


if __name__ == "__main__":
    main()
