"""``evaluate``: retrieval and clustering metrics of an embedding (DESIGN.md "Metrics").

Definitions in METHODS.md section 6; the formulas are in :mod:`.retrieval` and
:mod:`.clustering`, the search in :mod:`.search`.

* Without references the query set is the reference set and each query's own entry is
  excluded (by index). With ``ref_embeddings``/``ref_labels`` the queries are searched among
  those references as given (no exclusion).
* A query is "lone" when no other reference has its label (R_q = 0). Lone queries are
  excluded from every retrieval metric and counted in ``num_lone_queries``; ``num_queries``
  counts all queries. A retrieval metric with no non-lone query is NaN.
* ``average``: ``"micro"`` (default) averages a retrieval metric over the non-lone queries;
  ``"macro"`` averages each class's non-lone queries first, then the classes that have one,
  unweighted (TensorFlow Similarity's ``average="macro"``). Other metrics ignore it.
* Threshold metric ``fnmr@fmr=<FMR>`` (:mod:`.verification`): over every (query, reference)
  pair, own entry excluded, lone queries included (their pairs are negatives).
* Diagnostics ``dists@intra``, ``dists@inter``, ``dists@intra_over_inter``, ``rho_spectrum@K``
  (:mod:`.diagnostics`) describe the query embeddings and labels (``distance`` euclidean or
  cosine).
* ``linear_accuracy`` (:mod:`.linear_probe`): the accuracy of a softmax probe trained on the
  embeddings as given (before any cosine normalisation), seeded by ``seed``. With
  ``probe_embeddings``/``probe_labels`` (e.g. the train split's, when it shares the evaluated
  classes) the probe is fit on those and scores every query (the dml-tf seed's protocol); without,
  on a fixed per-class half of the queries, scoring the other half (zero-shot splits). The result
  then also holds ``linear_probe_protocol``, ``"probe_split"`` or ``"eval_halves"`` (a string).
* Clustering metrics (``nmi``, ``ami``, ``f1``) use every query, lone ones included (a lone
  label is still a class that k-means should isolate): k-means on the query embeddings (after
  L2 normalisation when ``distance="cosine"``) with k = the number of distinct query labels
  unless ``num_clusters`` is given.
* Neighbours searched per query: the largest K of the requested ``recall@K`` / ``map@K`` /
  ``ndcg@K`` / ``mrr@K``, for ``r_precision``/``map@r`` max R_q (the largest class count, minus
  one without references), for ``mrr`` every reference; capped at the number of available
  references (so a K beyond them is exact: the ranking has no more entries). Only [chunk, k] results are held
  at a time, so memory is O(N * D + chunk * k): no cap on k is needed for exactness. On a faiss
  GPU, a k above 1,024 makes the search run on the CPU (see :mod:`.search`).
* Labels: any 1-D values (only equality matters); embeddings and labels may be numpy arrays
  or tensors. The retrieval metric arithmetic runs on the host in numpy (it reads only the
  [chunk, k] neighbour labels).

Example:
    >>> import numpy as np
    >>> from dmltf import evaluation
    >>> x = np.array([[0.0], [0.1], [5.0], [5.2], [9.0]], "float32")
    >>> r = evaluation.evaluate(x, [0, 0, 1, 1, 2], metrics=("recall@1", "map@r", "nmi"))
    >>> [round(r[m], 3) for m in ("recall@1", "map@r", "nmi")], r["num_lone_queries"]
    ([1.0, 1.0, 1.0], 1)
"""
import numpy as np

from dmltf.evaluation import clustering, diagnostics, retrieval, verification
from dmltf.evaluation.search import iter_knn, prepare_embeddings, resolve_backend, to_numpy

# The linear probe trains with TensorFlow (dmltf.evaluation.linear_probe): imported only when its
# metric is asked for, so that every other metric runs on any Keras backend without TensorFlow.
LINEAR_ACCURACY, LINEAR_PROBE_PROTOCOL = "linear_accuracy", "linear_probe_protocol"

AVERAGES = ("micro", "macro")
# Results of a wide search are held per chunk of queries: keep a chunk's [chunk, k] near this size.
_WIDE_SEARCH_BYTES = 64 * 2**20

DEFAULT_METRICS = (
    "recall@1", "recall@2", "recall@4", "recall@8",
    "precision@1", "r_precision", "map@r", "nmi", "ami", "f1",
)  # fmt: skip


def metric_names():
    """Valid metric names; ``recall@K`` (``map@K``, ``map_c@K``, ``ndcg@K``, ``mrr@K``) stands for any
    integer K >= 1, ``fnmr@fmr=<FMR>`` for a fraction FMR in [0, 1], ``rho_spectrum@K`` for K != 0."""
    return ("recall@K", "map@K", "map_c@K", "ndcg@K", "mrr@K", *retrieval.METRICS.names(), "fnmr@fmr=<FMR>",
            *diagnostics.DIST_NAMES, "rho_spectrum@K", *clustering.METRICS.names(), LINEAR_ACCURACY)


def lower_is_better(name):
    """True for the metrics where smaller is better (``fnmr@fmr=``, ``dists@intra``,
    ``dists@intra_over_inter``, ``rho_spectrum@K``): a best-checkpoint choice must minimise them."""
    return verification.parse_fnmr(name) is not None or name in ("dists@intra", "dists@intra_over_inter") or (
        diagnostics.is_diagnostic(name) and name.startswith("rho_spectrum@"))


def _known(name):
    return isinstance(name, str) and (
        retrieval.get(name) is not None or name in clustering.METRICS or verification.parse_fnmr(name) is not None
        or diagnostics.is_diagnostic(name) or name == LINEAR_ACCURACY
    )


def check_metrics(metrics):
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise ValueError(f"metrics is empty; valid names: {', '.join(metric_names())}")
    for name in metrics:
        if not _known(name):
            raise ValueError(
                f"Unknown metric {name!r}; valid names: {', '.join(metric_names())} "
                "(recall@K, map@K, map_c@K, ndcg@K, mrr@K with any integer K >= 1)"
            )
    return dict.fromkeys(metrics)  # ordered, without repeats


def _labels(labels, num, name):
    labels = to_numpy(labels, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    if len(labels) != num:
        raise ValueError(f"{name} has {len(labels)} entries but the embeddings have {num} rows")
    return labels


def evaluate(
    embeddings,
    labels,
    ref_embeddings=None,
    ref_labels=None,
    metrics=DEFAULT_METRICS,
    distance="euclidean",
    backend="auto",
    num_clusters=None,
    kmeans_backend="faiss",
    seed=0,
    chunk_size=None,
    average="micro",
    probe_embeddings=None,
    probe_labels=None,
):
    """Metrics of the queries ``embeddings`` [Q, D] with ``labels`` [Q] (see the module docstring).

    Args:
        ref_embeddings, ref_labels: the reference (gallery) set; both or neither.
        metrics: names from :func:`metric_names` (``recall@K`` for any K).
        distance: ``"euclidean"`` (embeddings used as given), ``"cosine"`` or ``"dot"``.
        backend: kNN backend, ``"faiss"``, ``"tf"`` or ``"auto"``.
        num_clusters: k of k-means (default: number of distinct query labels).
        kmeans_backend: a k-means spec, ``"faiss"`` (20 iterations, seeded), ``"sklearn"`` or either with
            parameters, e.g. ``"sklearn:n_init=10,max_iter=300"`` (see :mod:`.clustering`).
        chunk_size: queries searched at once (see :func:`dmltf.evaluation.knn`).
        average: ``"micro"`` or ``"macro"`` (per-class) averaging of the retrieval metrics.
        probe_embeddings, probe_labels: what ``linear_accuracy``'s probe is fit on (both or
            neither); without them it is fit on half of the queries.

    Returns:
        dict with a float per requested metric, ``num_queries`` and ``num_lone_queries``; with
        ``linear_accuracy`` also ``linear_probe_protocol`` (a string).
    """
    metrics = check_metrics(metrics)
    if average not in AVERAGES:
        raise ValueError(f"Unknown average {average!r}; valid: {', '.join(AVERAGES)}")
    if distance not in diagnostics.DISTANCES and any(diagnostics.is_diagnostic(name) for name in metrics):
        raise ValueError(f"the dists@* and rho_spectrum@K diagnostics use euclidean or cosine, not {distance!r}")
    backend = resolve_backend(backend)
    clustering.check_backend(kmeans_backend)  # fail before the search, not after
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("give both ref_embeddings and ref_labels, or neither")
    if (probe_embeddings is None) != (probe_labels is None):
        raise ValueError("give both probe_embeddings and probe_labels, or neither")
    queries = prepare_embeddings(embeddings, distance, "embeddings")
    if not len(queries):
        raise ValueError("embeddings is empty")
    query_labels = _labels(labels, len(queries), "labels")
    exclude_self = ref_embeddings is None
    if exclude_self:
        refs, ref_labels = queries, query_labels
    else:
        refs = prepare_embeddings(ref_embeddings, distance, "ref_embeddings")
        if not len(refs):
            raise ValueError("ref_embeddings is empty")
        if refs.shape[1] != queries.shape[1]:
            raise ValueError(
                f"ref_embeddings have dimension {refs.shape[1]} but embeddings {queries.shape[1]}"
            )
        ref_labels = _labels(ref_labels, len(refs), "ref_labels")

    # Integer codes shared by queries and references: only label equality matters.
    _, codes = np.unique(np.concatenate([query_labels, ref_labels]), return_inverse=True)
    query_codes, ref_codes = codes[: len(queries)], codes[len(queries) :]
    r = np.bincount(ref_codes, minlength=codes.max() + 1)[query_codes] - int(exclude_self)
    valid = r > 0
    results = {}

    retrieval_metrics = {name: retrieval.get(name) for name in metrics if retrieval.get(name)}
    if retrieval_metrics:
        per_query = {name: [] for name in retrieval_metrics}
        if valid.any():
            k = max(metric.needs_k(int(r.max())) for metric in retrieval_metrics.values())
            k = min(k, len(refs) - int(exclude_self))
            search_chunk = chunk_size
            if search_chunk is None and k > 1024:  # e.g. mrr reads every reference
                search_chunk = max(1, _WIDE_SEARCH_BYTES // (12 * k))
            chunks = iter_knn(queries, refs, k, exclude_self, distance, backend, search_chunk)
            for start, _, indices in chunks:
                rows = slice(start, start + len(indices))
                keep = valid[rows]
                match = ref_codes[indices[keep]] == query_codes[rows][keep][:, None]
                for name, metric in retrieval_metrics.items():
                    per_query[name].append(np.asarray(metric.per_query(match, r[rows][keep]), np.float64))
        valid_codes = query_codes[valid]
        for name, values in per_query.items():
            values = np.concatenate(values) if values else np.zeros(0)
            results[name] = _average(values, valid_codes, average)

    fnmr = {name: verification.parse_fnmr(name) for name in metrics if verification.parse_fnmr(name) is not None}
    if fnmr:
        values = verification.fnmr_at_fmr(
            queries, query_labels, tuple(fnmr.values()), *(() if exclude_self else (refs, ref_labels)),
            distance=distance, chunk_size=chunk_size)
        results.update({name: values[f] for name, f in fnmr.items()})

    diagnostic_names = [name for name in metrics if diagnostics.is_diagnostic(name)]
    if diagnostic_names:
        results.update(diagnostics.evaluate_diagnostics(queries, query_labels, diagnostic_names, distance))

    clustering_metrics = [name for name in metrics if name in clustering.METRICS]
    if clustering_metrics:
        k = num_clusters or len(np.unique(query_codes))
        clusters = clustering.kmeans(queries, k, kmeans_backend, seed)
        for name in clustering_metrics:
            results[name] = float(clustering.METRICS.lookup(name)(query_codes, clusters))

    protocol = None
    if LINEAR_ACCURACY in metrics:
        from dmltf.evaluation import linear_probe  # noqa: PLC0415 (TensorFlow: see LINEAR_ACCURACY)

        results[LINEAR_ACCURACY], protocol = linear_probe.linear_accuracy(
            embeddings, query_labels, probe_embeddings, probe_labels, seed=seed)

    results = {name: results[name] for name in metrics}
    results.update(num_queries=len(queries), num_lone_queries=int((~valid).sum()))
    if protocol:
        results[LINEAR_PROBE_PROTOCOL] = protocol
    return results


def _average(values, codes, average):
    """Mean of per-query ``values`` (NaN if none): over queries, or over classes of ``codes``."""
    if not len(values):
        return float("nan")
    if average == "micro":
        return float(values.mean())
    _, inverse = np.unique(codes, return_inverse=True)
    per_class = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return float(per_class.mean())
