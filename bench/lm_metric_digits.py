"""LM-Metric (paper and reference mode) next to Smooth-AP alone on the bundled digits (zero-shot:
train 0-4, test 5-9), on the same network: small CNN, average + max pooling, one Dense mapping to
a 32-d embedding (LM-Metric's e1; the flow sees it as a 4 x 8 image), Smooth-AP tau 0.01, P x K
batches, Adam 1e-3 with weight decay 1e-4 in the gradient, the same epochs. LM-Metric adds the
batch GRU, the conditional Glow (2 levels x 4 steps, 16 channels) and the learned item weights.

Besides the metrics it prints, per row, the policy's entropy at the last epoch (log 64 = 4.159 for
a uniform policy) and the mean reward: whether the learned weights move. Differences are paired
by seed against the first row; +- is one standard error of the mean difference.

    python bench/lm_metric_digits.py [--epochs 10] [--seeds 0 1 2 ...] [--rows ...]
"""
import argparse
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import config  # noqa: E402
from dmltf.training.experiment import run  # noqa: E402
from paired import print_paired_table  # noqa: E402  (bench/paired.py)

METRICS = ["map@r", "recall@1", "r_precision", "nmi"]
LM = dict(method="lm_metric", lm_metric_flow_width=8, lm_metric_flow_channels=16, lm_metric_flow_levels=2,
          lm_metric_flow_steps=4)
ROWS = {
    "smooth_ap": dict(method="metric_learner"),
    "lm_metric paper": dict(**LM, lm_metric_mode="paper"),
    "lm_metric reference": dict(**LM, lm_metric_mode="reference"),
}


def train(seed, epochs, extra):
    cfg = config.make(dataset="digits", digits_protocol="zero_shot", backbone="small_cnn", pooling="avg+max",
                      embedding_dim=32, loss="smooth_ap", batch_sampler="balanced", classes_per_batch=4,
                      samples_per_class=8, optimizer="adam", lr=1e-3, weight_decay=1e-4, weight_decay_mode="l2",
                      epochs=epochs, eval_every=0, eval_metrics=METRICS, progress="none", export=False,
                      tb_neighbours=0, tb_projector_points=0, seed=seed,
                      logdir=tempfile.mkdtemp(prefix="lm_metric_digits_"), **extra)
    trainer, rows = run(cfg)
    train_values = [h for h in trainer.history if "policy_entropy" in h]
    return {**rows[-1][1], **({k: train_values[-1][k] for k in ("policy_entropy", "reward")} if train_values else {})}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(5)))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    results = {name: [train(seed, args.epochs, ROWS[name]) for seed in args.seeds] for name in args.rows}
    print(f"digits zero-shot, small_cnn (avg+max), emb 32, Smooth-AP tau 0.01, batches 4 x 8, Adam 1e-3 "
          f"(wd 1e-4 in the gradient), {args.epochs} epochs, {len(args.seeds)} seeds {args.seeds}")
    print_paired_table(results, args.rows[0], METRICS)
    print(f"last epoch's policy entropy (uniform: {math.log(64):.3f}) and mean batch reward:")
    for name, runs in results.items():
        if "policy_entropy" in runs[0]:
            per_seed = " ".join(f"{r['policy_entropy']:.3f}" for r in runs)
            print(f"  {name:<22} entropy {np.mean([r['policy_entropy'] for r in runs]):.3f} (per seed {per_seed}), "
                  f"reward {np.mean([r['reward'] for r in runs]):.3f}")


if __name__ == "__main__":
    main()
