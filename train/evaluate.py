"""Evaluate a trained embedder on a dataset split: a metrics table and, optionally, JSON.

    python train/evaluate.py --run=runs/demo                      # the run's eval split
    python train/evaluate.py --model=runs/demo/export/embedding_model.keras \\
        --dataset=data/cars196.h5 --split=test --output_json=metrics.json

``linear_accuracy`` fits its probe on the run's train split when that holds every class of the
run's eval split (--run without --dataset, as the training run's evaluations did), else on half
of the evaluated split (dmltf.evaluation.linear_probe).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

import cli  # noqa: E402

flags.DEFINE_string("dataset", "", "HDF5 file or TFRecord directory; empty: the run's own dataset.")
flags.DEFINE_string("split", "test", "Split of --dataset to evaluate.")
flags.DEFINE_list("metrics", ["recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r",
                              "nmi", "ami", "f1"], "Metrics (dmltf.evaluation).")
flags.DEFINE_enum("distance", "euclidean", ["euclidean", "cosine"], "kNN distance.")
flags.DEFINE_bool("l2_normalize", True, "L2-normalise the embeddings first.")
flags.DEFINE_string("output_json", "", "Also write the metrics here.")
flags.DEFINE_string("average", "", "micro or macro averaging of the retrieval metrics; empty: the run's own "
                    "(--eval_average), micro for --model.")
flags.DEFINE_string("kmeans", "", "k-means of the clustering metrics, as train/main.py's --eval_kmeans "
                    "(backend[:key=value,...]); empty: the run's own (and its seed), faiss for --model.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from dmltf import evaluation
    from dmltf.distances import l2_normalize
    from dmltf.training import builders, validation
    from dmltf.training.trainer import linear_probe_split, write_json

    # Mistakes in the flags fail before the embedding, not after it.
    metric_names = validation.check_metric_flag(FLAGS.metrics, "--metrics")
    if FLAGS.output_json:
        validation.check_output_file(FLAGS.output_json, "--output_json")
    embedder, cfg = cli.load_embedder()
    split = cli.open_split(FLAGS.dataset, FLAGS.split, cfg)
    embeddings, labels = embedder.embed(split)
    probe_split = None
    if cfg is not None and not FLAGS.dataset:
        probe_split = linear_probe_split(metric_names, builders.load_splits(cfg)[0], split)
    probe_embeddings, probe_labels = (None, None) if probe_split is None else embedder.embed(probe_split)
    if FLAGS.l2_normalize:
        embeddings = l2_normalize(embeddings).numpy()
        probe_embeddings = None if probe_embeddings is None else l2_normalize(probe_embeddings).numpy()
    # The run's k-means, seed and averaging, so that its metrics are reproduced exactly.
    kmeans = FLAGS.kmeans or getattr(cfg, "eval_kmeans", "faiss")
    metrics = evaluation.evaluate(embeddings, labels, metrics=metric_names, distance=FLAGS.distance,
                                  kmeans_backend=kmeans, seed=getattr(cfg, "seed", 0),
                                  average=FLAGS.average or getattr(cfg, "eval_average", "micro"),
                                  probe_embeddings=probe_embeddings, probe_labels=probe_labels)
    width = max(len(m) for m in metrics)
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    if FLAGS.output_json:
        write_json(FLAGS.output_json, {k: v if isinstance(v, str) else float(v) for k, v in metrics.items()})


if __name__ == "__main__":
    cli.run(main)
