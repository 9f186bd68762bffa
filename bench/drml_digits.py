"""DRML next to its ProxyAnchor baseline on the bundled digits (zero-shot: train 0-4, test 5-9), on
the same trunk (small CNN, 128-d feature), embedding size, shuffled batches, optimiser and epochs.

Rows: the baseline (MetricLearner: trunk -> Dense -> ProxyAnchor) at DRML's baseline alpha/delta
32/0.1 and at DRML's own 64/0.2; DRML (4 branches, w_repre 10, w_recon 1) at 64/0.2 (its recipe)
and 32/0.1; the MultiEmbedder ablation (w_recon 0.1). Both methods use AdamW at 1e-3 with the
proxies at 1e-2 (the recipes' embedder/proxy rates; the trunk shares the embedder's rate here).
Differences are paired by seed against the first row; +- is one standard error of the mean
difference.

    python bench/drml_digits.py [--epochs 15] [--seeds 0 1 2 ...] [--rows ...]
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import config  # noqa: E402
from dmltf.training.experiment import run  # noqa: E402
from paired import print_paired_table  # noqa: E402  (bench/paired.py)

METRICS = ["map@r", "recall@1", "r_precision", "nmi"]


def proxy_anchor(alpha, margin, role=""):
    return {f"{role}loss_proxy_anchor_alpha": alpha, f"{role}loss_proxy_anchor_margin": margin}


DRML = dict(method="drml", drml_branches=4, drml_repre_weight=10.0, drml_recon_weight=1.0,
            proxy_initializer="kaiming_uniform", group_lrs=["ensemble:1e-2", "repre:1e-2"])
ROWS = {
    "baseline 32/0.1": dict(method="metric_learner", proxy_initializer="kaiming_uniform", group_lrs=["loss:1e-2"],
                            **proxy_anchor(32.0, 0.1)),
    "baseline 64/0.2": dict(method="metric_learner", proxy_initializer="kaiming_uniform", group_lrs=["loss:1e-2"],
                            **proxy_anchor(64.0, 0.2)),
    "drml 64/0.2": dict(**DRML, **proxy_anchor(64.0, 0.2), **proxy_anchor(64.0, 0.2, "drml_branch_")),
    "drml 32/0.1": dict(**DRML, **proxy_anchor(32.0, 0.1), **proxy_anchor(32.0, 0.1, "drml_branch_")),
    "multi 64/0.2": dict(**{**DRML, "drml_embedder": "multi", "drml_recon_weight": 0.1}, **proxy_anchor(64.0, 0.2),
                         **proxy_anchor(64.0, 0.2, "drml_branch_")),
}


def train(seed, epochs, extra):
    cfg = config.make(dataset="digits", digits_protocol="zero_shot", backbone="small_cnn", pooling="avg+max",
                      embedding_dim=32, loss="proxy_anchor", batch_sampler="random", classes_per_batch=10,
                      samples_per_class=4, optimizer="adamw", lr=1e-3, weight_decay=1e-4, epochs=epochs,
                      eval_every=0, eval_metrics=METRICS, progress="none", export=False, tb_neighbours=0,
                      tb_projector_points=0, seed=seed, logdir=tempfile.mkdtemp(prefix="drml_digits_"), **extra)
    return run(cfg)[1][-1][1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    results = {name: [train(seed, args.epochs, ROWS[name]) for seed in args.seeds] for name in args.rows}
    base = args.rows[0]
    print(f"digits zero-shot, small_cnn (avg+max), emb 32, shuffled batches of 40, AdamW 1e-3 (proxies 1e-2), "
          f"{args.epochs} epochs, {len(args.seeds)} seeds {args.seeds}")
    print_paired_table(results, base, METRICS)


if __name__ == "__main__":
    main()
