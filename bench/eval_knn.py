"""Time recall@K (K = 1, 2, 4, 8) through dmltf.evaluation against a bare faiss search.

On N random float32 embeddings (default 60,000 x 512) with SOP-like labels (uniform over
~11,000 classes, so ~5.5 images per class and a few lone queries), this prints the seconds of

* ``bare faiss``: ``IndexFlatL2`` add + search of k = 9 (8 neighbours + the query itself),
* ``dmltf faiss``: ``evaluation.evaluate(..., backend="faiss")`` (validation, index, search in
  chunks, self-exclusion, metrics),
* ``dmltf tf``: the same with the chunked TensorFlow fallback,

the ratio dmltf faiss / bare faiss (issue 2 asks for <= 1.15), the metrics of both backends,
and the peak RSS after each phase. faiss runs are repeated ``--repeats`` times, alternating,
and the fastest of each is kept, in wall-clock and in CPU seconds (the machine may be shared).

    python bench/eval_knn.py [--num 60000] [--dim 512] [--classes 11000] [--repeats 2] [--skip_tf]
"""
import argparse
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from dmltf import evaluation  # noqa: E402

METRICS = ("recall@1", "recall@2", "recall@4", "recall@8")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bare_faiss(x, k):
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(x, k)


def timed(fn):
    """(wall seconds, CPU seconds of all threads, result): CPU time is the steadier figure
    when other jobs share the cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def runs(times):
    return ", ".join(f"{wall:.2f} wall / {cpu:.2f} cpu" for wall, cpu in times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=11_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip_tf", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.num, args.dim), dtype=np.float32)
    labels = rng.integers(0, args.classes, args.num)
    print(f"{args.num} x {args.dim} float32, {len(np.unique(labels))} classes, "
          f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads")  # fmt: skip
    bare_faiss(x[:2000], 9)  # warm up BLAS / OpenMP threads
    print(f"peak RSS after data: {peak_rss_mb():.0f} MB")

    bare_times, dmltf_times = [], []
    k = max(int(m.split("@")[1]) for m in METRICS) + 1
    for _ in range(args.repeats):
        bare_times.append(timed(lambda: bare_faiss(x, k))[:2])
        *seconds, faiss_metrics = timed(lambda: evaluation.evaluate(x, labels, metrics=METRICS, backend="faiss"))
        dmltf_times.append(seconds)
    bare, dmltf_faiss = np.min(bare_times, axis=0), np.min(dmltf_times, axis=0)
    print(f"bare faiss IndexFlatL2 search (k={k}): {bare[0]:.2f} s wall, {bare[1]:.2f} s cpu  (runs: {runs(bare_times)})")
    print(f"dmltf faiss recall@1,2,4,8:          {dmltf_faiss[0]:.2f} s wall, {dmltf_faiss[1]:.2f} s cpu  (runs: {runs(dmltf_times)})")
    ratio = dmltf_faiss / bare
    print(f"ratio dmltf faiss / bare faiss:      {ratio[0]:.3f} wall, {ratio[1]:.3f} cpu  (required <= 1.15)")
    print(f"metrics (faiss): {faiss_metrics}")
    print(f"peak RSS after faiss runs: {peak_rss_mb():.0f} MB")

    if not args.skip_tf:
        wall, cpu, tf_metrics = timed(lambda: evaluation.evaluate(x, labels, metrics=METRICS, backend="tf"))
        print(f"dmltf tf fallback recall@1,2,4,8:    {wall:.2f} s wall, {cpu:.2f} s cpu  "
              f"(ratio to bare faiss {wall / bare[0]:.2f} wall, {cpu / bare[1]:.2f} cpu)")  # fmt: skip
        print(f"metrics (tf):    {tf_metrics}")
        print(f"same metrics on both backends: {all(tf_metrics[m] == faiss_metrics[m] for m in METRICS)}")
        print(f"peak RSS after tf run: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
