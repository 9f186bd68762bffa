"""Build time, queries/s and recall@k of the dmltf.index backends against exact search.

Data: N float32 vectors of dimension D drawn around ``--clusters`` random centres (a unit
Gaussian centre, then ``--spread`` times unit Gaussian noise per vector: "random but
clustered", as embeddings of a trained model are), and ``--queries`` more from the same
clusters. For each size in ``--sizes`` this prints one row per backend setting:

* build: seconds of ``Index.build`` (IVF: k-means training + add; HNSW: graph construction),
* queries/s: ``--queries`` queries searched at once for ``k`` neighbours (wall clock, the
  fastest of ``--repeats``),
* recall@k: the mean fraction of the exact k nearest neighbours (faiss flat) that it returns,
* speed-up: its queries/s over the exact search's.

    python bench/index_speed.py [--sizes 100000,1000000] [--dim 128] [--k 10] [--metric euclidean] [--repeats 3]

Sizes whose vectors and index would not fit in ``--memory_gib`` (default 24) are skipped.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dmltf.index import Index  # noqa: E402


def clustered(rng, n, dim, centres, spread):
    labels = rng.integers(0, len(centres), n)
    return (centres[labels] + spread * rng.standard_normal((n, dim), dtype=np.float32)).astype(np.float32), labels


def settings(n, dim):
    """(backend, build params, [search-time params]): each index is built once, then
    searched at each of its search-time settings (IVF nprobe, HNSW ef_search)."""
    nlist = int(round(4 * np.sqrt(n)))
    rows = [("exact", {"search": "faiss"}, [{}])]
    if n * dim <= 100_000 * 128:  # the TF fallback at the small size only (it is the slow one)
        rows.append(("exact", {"search": "tf"}, [{}]))
    rows.append(("ivf", {"nlist": nlist}, [{"nprobe": p} for p in (1, 8, 32, 128)]))
    rows.append(("hnsw", {"m": 32, "ef_construction": 40}, [{"ef_search": e} for e in (16, 64, 256)]))
    return rows


def recall_at_k(found, exact):
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, exact)]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.5)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", default="euclidean", choices=("euclidean", "cosine"))
    parser.add_argument("--memory_gib", type=float, default=24.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import faiss

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; dim {args.dim}, {args.clusters} "
          f"clusters, spread {args.spread}, {args.queries} queries, k={args.k}, metric {args.metric}")
    for n in (int(s) for s in args.sizes.split(",")):
        # vectors + exact copy + an index copy + HNSW links (~M * 2 * 4 bytes a vector), with headroom
        need_gib = n * (3 * 4 * args.dim + 2 * 32 * 4) * 1.5 / 2**30
        if need_gib > args.memory_gib:
            print(f"\nN={n:,}: skipped, needs ~{need_gib:.1f} GiB > --memory_gib={args.memory_gib}")
            continue
        rng = np.random.default_rng(args.seed)
        centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
        x, labels = clustered(rng, n, args.dim, centres, args.spread)
        queries, _ = clustered(rng, args.queries, args.dim, centres, args.spread)
        print(f"\nN={n:,} x {args.dim}")
        print(f"{'backend':<48}{'build s':>10}{'queries/s':>12}{'recall@k':>10}{'speed-up':>10}")
        exact, exact_qps = None, None
        for backend, params, searches in settings(n, args.dim):
            start = time.perf_counter()
            index = Index.build(x, labels, metric=args.metric, backend=backend, **params)
            build = time.perf_counter() - start
            for search_params in searches:
                index.set_search_params(**search_params)
                index.search(queries[:8], args.k)  # warm-up: TensorFlow's first call traces
                seconds = []
                for _ in range(args.repeats):  # the fastest of a few: the machine may be shared
                    start = time.perf_counter()
                    found = index.search(queries, args.k).indices
                    seconds.append(time.perf_counter() - start)
                qps = len(queries) / min(seconds)
                if exact is None:
                    exact, exact_qps = found, qps
                label = " ".join([backend, *(f"{k}={v}" for k, v in {**params, **search_params}.items())])
                print(f"{label:<48}{build:>10.2f}{qps:>12,.0f}{recall_at_k(found, exact):>10.4f}"
                      f"{qps / exact_qps:>10.1f}", flush=True)
            del index


if __name__ == "__main__":
    main()
