"""Build a search index of a trained embedder's embeddings of a dataset split (dmltf.index).

    python train/index.py --run=runs/demo --split=test --output=runs/demo/index
    python train/index.py --run=runs/demo --split=test --output=runs/demo/index \\
        --calibrate_split=train --target_precision=0.9          # and a match threshold
    python train/index.py --model=runs/cars/export/embedding_model.keras --dataset=data/cars196.h5 \\
        --split=test --output=cars_index --backend=hnsw --ef_search=128

With --run and no --dataset the split is one of the run's own dataset. The index directory
records the run (or model) and the split, so train/search.py needs only --index. The directory
is written under a temporary name and renamed when complete; an existing one is refused
unless --overwrite.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

import cli  # noqa: E402

flags.DEFINE_string("dataset", "", "HDF5 file or TFRecord directory; empty: the run's own dataset.")
flags.DEFINE_string("split", "test", "Split to index.")
flags.DEFINE_string("output", "", "The index directory to write.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output directory.")
flags.DEFINE_enum("metric", "cosine", ["cosine", "euclidean"], "cosine (distance 1 - cos) or euclidean (L2).")
flags.DEFINE_enum("backend", "exact", ["exact", "ivf", "hnsw"], "exact, or approximate: ivf (faiss IVF-Flat) "
                  "or hnsw (faiss HNSW-Flat).")
flags.DEFINE_enum("search", "auto", ["auto", "faiss", "tf"], "exact: faiss flat, or TensorFlow (auto: faiss when "
                  "installed).")
flags.DEFINE_integer("nlist", 0, "ivf: cells (0: 4 sqrt(N)).")
flags.DEFINE_integer("nprobe", 8, "ivf: cells visited per query.")
flags.DEFINE_integer("hnsw_m", 32, "hnsw: links per node.")
flags.DEFINE_integer("ef_construction", 40, "hnsw: candidates while building.")
flags.DEFINE_integer("ef_search", 64, "hnsw: candidates while searching.")
flags.DEFINE_string("calibrate_split", "", "Also calibrate a match threshold on the pairs of this split (held out "
                    "from the indexed one).")
flags.DEFINE_float("target_precision", 0.9, "The pair precision the threshold must reach.")
FLAGS = flags.FLAGS


def backend_params():
    if FLAGS.backend == "exact":
        return {"search": FLAGS.search}
    if FLAGS.backend == "ivf":
        return {"nlist": FLAGS.nlist or None, "nprobe": FLAGS.nprobe}
    return {"m": FLAGS.hnsw_m, "ef_construction": FLAGS.ef_construction, "ef_search": FLAGS.ef_search}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import config
    from dmltf.index import commands

    if not FLAGS.output:
        raise ValueError("--output (the index directory to write) is required")
    source = commands.make_source(FLAGS.run, FLAGS.which, FLAGS.model, FLAGS.dataset, FLAGS.split)
    index = commands.build_index(source, FLAGS.output, metric=FLAGS.metric, backend=FLAGS.backend,
                                 params=backend_params(), calibrate_split=FLAGS.calibrate_split,
                                 target_precision=FLAGS.target_precision, overwrite=FLAGS.overwrite,
                                 batch_size=FLAGS.batch_size, defaults=vars(config.make()))
    print(f"indexed {len(index)} x {index.dim} embeddings of split {FLAGS.split!r} ({index.metric}, "
          f"{index.backend.name} {index.backend.params()}) in {FLAGS.output}")
    if index.calibration:
        c = index.calibration
        print(f"match threshold {c['threshold']:.6g} ({index.metric} distance): precision {c['precision']:.4f}, "
              f"recall {c['recall']:.4f} on the {c['num_pairs']} pairs of split {FLAGS.calibrate_split!r}")


if __name__ == "__main__":
    cli.run(main)
