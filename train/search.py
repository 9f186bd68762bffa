"""Search an index (train/index.py) for the neighbours of image files: a table and a PNG grid.

    python train/search.py --index=runs/demo/index --images=a.jpg,b.jpg --k=8
    python train/search.py --index=runs/demo/index --images='queries/*.png' --grid=neighbours.png

For each query it prints the neighbours' rank, id (``<split>/<row>``), label and distance
(cosine distance 1 - cos, or euclidean L2, as the index was built) and, when the index has a
calibrated threshold, whether each is a match. The grid has a row per query: the query framed
grey, then its neighbours framed green or red (a match or not; without a threshold: the label
of the nearest neighbour or another). The embedder is the index's run or model unless --run or
--model is given.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

import cli  # noqa: E402

flags.DEFINE_string("index", "", "An index directory written by train/index.py.")
flags.DEFINE_list("images", [], "Image files (JPEG or PNG) or globs, comma-separated.")
flags.DEFINE_integer("k", 8, "Neighbours per query.")
flags.DEFINE_string("grid", "neighbours.png", "PNG grid of the queries and their neighbours; empty: none.")
flags.DEFINE_integer("cell", 64, "Side in pixels of a grid cell.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --grid file.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import config
    from dmltf.index import commands

    if not FLAGS.index or not FLAGS.images:
        raise ValueError("give --index (a train/index.py directory) and --images")
    if FLAGS.k < 1 or FLAGS.cell < 1:
        raise ValueError(f"--k and --cell must be >= 1, got {FLAGS.k} and {FLAGS.cell}")
    paths = commands.image_paths(FLAGS.images)
    defaults = vars(config.make())
    embedder = cli.load_embedder()[0] if FLAGS.run or FLAGS.model else None
    result, _ = commands.search_images(FLAGS.index, paths, FLAGS.k, FLAGS.grid, FLAGS.cell, FLAGS.overwrite,
                                       FLAGS.batch_size, defaults, embedder)
    for q, path in enumerate(paths):
        print(f"query {path}")
        print(f"  {'rank':>4}  {'distance':>10}  {'label':>6}  {'match':>5}  id")
        for r in range(result.indices.shape[1]):
            match = "" if result.matches is None else ("yes" if result.matches[q, r] else "no")
            print(f"  {r + 1:>4}  {result.distances[q, r]:>10.4f}  {result.labels[q, r]:>6}  {match:>5}  "
                  f"{result.ids[q, r]}")
    if FLAGS.grid:
        print(f"wrote the grid of {len(paths)} queries to {FLAGS.grid}")


if __name__ == "__main__":
    cli.run(main)
