"""PaddlePaddle's two stages on the bundled digits (zero-shot: train 0-4, test 5-9): arcmargin
pre-training then EML fine-tuning (``--init_from``), next to EML alone for the same total number of
iterations, on the same network (small CNN, its 128-d pooled feature as the embedding, as the
recipe's 2048-d ResNet feature), Momentum 0.9 with L2 decay 1e-4 as the paddle_sop_*.cfg recipes.

Stage 1: arcmargin (s 80, m 0.15) on shuffled batches of 40 at lr 0.01 (the recipe's), S1
iterations; stage 2: EML (beta 1e5) on contiguous class blocks at lr ``--stage2_lr`` for S2
iterations. The digits have 5 training classes, so a batch of 40 is 5 blocks of 8 (the recipe's
blocks of 2 would make batches of 10), and the stage-2 rate defaults to 10x the recipe's 1e-4 (a
small network from a short pre-training). EML alone runs S1 + S2 iterations at the stage-2 rate
and at 0.01. Differences are paired by seed against "eml alone"
at the stage-2 rate; +- is one standard error of the mean difference.

    python bench/paddle_digits.py [--stage1_steps 400] [--stage2_steps 400] [--stage2_lr 1e-3] [--seeds 0 1 ...]
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
COMMON = dict(dataset="digits", digits_protocol="zero_shot", backbone="small_cnn", embedding_dim=0,
              optimizer="sgd", momentum=0.9, weight_decay=1e-4, weight_decay_mode="l2", epochs=10000,
              eval_every=0, eval_metrics=METRICS, progress="none", export=False, tb_neighbours=0,
              tb_projector_points=0)
ARCMARGIN = dict(loss="arcface", loss_arcface_scale=80.0, loss_arcface_margin=0.15, proxy_initializer="xavier_uniform",
                 l2_normalize=False, batch_sampler="random", classes_per_batch=10, samples_per_class=4, lr=0.01)
EML = dict(loss="eml", loss_eml_beta=1e5, l2_normalize=False, batch_sampler="class_blocks", classes_per_batch=5,
           samples_per_class=8)


def train(seed, steps, **flags):
    logdir = tempfile.mkdtemp(prefix="paddle_digits_")
    trainer, rows = run(config.make(**COMMON, seed=seed, max_steps=steps, logdir=logdir, **flags))
    return logdir, rows[-1][1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage1_steps", type=int, default=400)
    parser.add_argument("--stage2_steps", type=int, default=400)
    parser.add_argument("--stage2_lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)))
    args = parser.parse_args()
    total = args.stage1_steps + args.stage2_steps
    rows = {f"eml alone, lr {args.stage2_lr:g}": [], "eml alone, lr 0.01": [],
            f"arcmargin {args.stage1_steps} only": [], f"arcmargin {args.stage1_steps} + eml {args.stage2_steps}": []}
    names = list(rows)
    for seed in args.seeds:
        rows[names[0]].append(train(seed, total, **{**EML, "lr": args.stage2_lr})[1])
        rows[names[1]].append(train(seed, total, **{**EML, "lr": 0.01})[1])
        stage1, metrics = train(seed, args.stage1_steps, **ARCMARGIN)
        rows[names[2]].append(metrics)
        rows[names[3]].append(train(seed, args.stage2_steps, **{**EML, "lr": args.stage2_lr}, init_from=stage1)[1])
    print(f"digits zero-shot, small_cnn (128-d pooled feature), Momentum 0.9 + L2 1e-4, batches of 40, "
          f"{len(args.seeds)} seeds {args.seeds}; every row {total} iterations except the stage-1-only one")
    base = names[0]
    print_paired_table(rows, base, METRICS)


if __name__ == "__main__":
    main()
