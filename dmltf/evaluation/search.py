"""Exact k-nearest-neighbour search: faiss (queries in chunks) or a chunked TensorFlow search.

Both backends are exact (brute force) and never hold an N x N matrix:

* ``faiss``: ``IndexFlatL2`` (euclidean) or ``IndexFlatIP`` (cosine, dot) over the
  references, searched ``chunk_size`` queries at a time (default 8,192; faiss blocks its BLAS
  work internally, so chunking costs nothing). When faiss sees a GPU and ``k`` is at most
  :data:`FAISS_GPU_MAX_K` the index is moved to all GPUs; larger ``k`` stays on the CPU,
  because faiss GPU indexes cannot select more than 1,024 (2,048 in newer builds) neighbours.
* ``tf``: for each chunk of queries a [chunk, N] score matrix from :mod:`dmltf.distances`
  (``keras.ops``, so TensorFlow under the TF backend) and ``top_k``. The default chunk keeps
  that matrix near 256 MB.

``distance`` is ``"euclidean"`` (returned values are true euclidean distances, ascending),
``"cosine"`` (both sides L2-normalised, then inner product; cosine similarities, descending)
or ``"dot"`` (raw inner products, descending).

Self-exclusion (query set = reference set) is done by index: search ``k + 1``, drop the
query's own index wherever it appears, or the last neighbour if it does not appear. Ranking
self first is not assumed, because exact duplicates tie with it (METHODS.md section 6 notes
that "drop column 0", as in Revisiting-DML, breaks on them).

Example:
    >>> import numpy as np
    >>> from dmltf import evaluation
    >>> x = np.array([[0.0], [1.0], [3.0]], "float32")
    >>> d, i = evaluation.knn(x, x, k=1, exclude_self=True)
    >>> i[:, 0].tolist(), d[:, 0].tolist()
    ([1, 0, 1], [1.0, 1.0, 2.0])
"""
import numpy as np
from keras import ops

from dmltf import distances as distances_lib

DISTANCES = ("euclidean", "cosine", "dot")
BACKENDS = ("auto", "faiss", "tf")
FAISS_GPU_MAX_K = 1024
FAISS_CHUNK_SIZE = 8192
TF_CHUNK_BYTES = 256 * 2**20


def to_numpy(x, name, dtype=None):
    """numpy view of a numpy array, tf tensor or list (no copy when already numpy)."""
    try:
        x = ops.convert_to_numpy(x)
    except Exception as error:  # e.g. ragged or object input
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array ({error})") from None
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def prepare_embeddings(x, distance, name="embeddings"):
    """Contiguous float32 [N, D], finite, L2-normalised when ``distance`` is cosine."""
    if distance not in DISTANCES:
        raise ValueError(f"Unknown distance {distance!r}; valid names: {', '.join(DISTANCES)}")
    x = np.ascontiguousarray(to_numpy(x, name, "float32"))
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_samples, dim], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf values")
    if distance == "cosine":
        x = np.ascontiguousarray(ops.convert_to_numpy(distances_lib.l2_normalize(x)), "float32")
    return x


def resolve_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; valid names: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "tf"
    return "faiss"


class _FaissSearch:
    def __init__(self, refs, distance, k):
        import faiss

        self.is_euclidean = distance == "euclidean"
        index = (faiss.IndexFlatL2 if self.is_euclidean else faiss.IndexFlatIP)(refs.shape[1])
        index.add(refs)
        if faiss.get_num_gpus() > 0 and k <= FAISS_GPU_MAX_K:
            index = faiss.index_cpu_to_all_gpus(index)
        self.index = index

    def __call__(self, queries, k):
        scores, indices = self.index.search(queries, k)
        if self.is_euclidean:  # faiss returns squared distances
            scores = np.sqrt(np.maximum(scores, 0.0))
        return scores, indices


class _TFSearch:
    def __init__(self, refs, distance, k):
        self.is_euclidean = distance == "euclidean"
        # Rank by squared distance (no sqrt of the whole chunk); cosine inputs are normalised.
        self.distance = distances_lib.get("squared_euclidean" if self.is_euclidean else "dot")
        self.refs = ops.convert_to_tensor(refs)

    def __call__(self, queries, k):
        scores = self.distance.pairwise(ops.convert_to_tensor(queries), self.refs)
        top, indices = ops.top_k(-scores if self.is_euclidean else scores, k=k)
        top = ops.convert_to_numpy(top)
        if self.is_euclidean:
            top = np.sqrt(np.maximum(-top, 0.0))
        return top, ops.convert_to_numpy(indices)


def _drop_self(scores, indices, query_indices):
    """From k + 1 neighbours keep k: without the query's own index, else without the last."""
    drop = indices == query_indices[:, None]
    drop[~drop.any(axis=1), -1] = True
    keep = ~drop
    k = indices.shape[1] - 1
    return scores[keep].reshape(-1, k), indices[keep].reshape(-1, k)


def iter_knn(queries, refs, k, exclude_self=False, distance="euclidean", backend="faiss", chunk_size=None):
    """Yields ``(start, distances, indices)`` per chunk of prepared float32 ``queries``.

    ``queries`` and ``refs`` come from :func:`prepare_embeddings`; ``backend`` is resolved.
    """
    available = len(refs) - int(exclude_self)
    if exclude_self and queries is not refs:
        raise ValueError("exclude_self needs the query set to be the reference set")
    if not 1 <= k <= available:
        raise ValueError(f"k={k} must be between 1 and the {available} available references")
    if queries.shape[1] != refs.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but references {refs.shape[1]}")
    search_k = k + int(exclude_self)
    search = (_FaissSearch if backend == "faiss" else _TFSearch)(refs, distance, search_k)
    if chunk_size is None:
        chunk_size = FAISS_CHUNK_SIZE if backend == "faiss" else max(1, TF_CHUNK_BYTES // (4 * len(refs)))
    for start in range(0, len(queries), chunk_size):
        scores, indices = search(queries[start : start + chunk_size], search_k)
        scores, indices = scores.astype("float32", copy=False), indices.astype("int64", copy=False)
        if exclude_self:
            scores, indices = _drop_self(scores, indices, np.arange(start, start + len(indices)))
        yield start, scores, indices


def knn(queries, refs, k, exclude_self=False, distance="euclidean", backend="auto", chunk_size=None):
    """The ``k`` nearest references of every query.

    Args:
        queries: [Q, D] numpy array or tensor.
        refs: [N, D] references; with ``exclude_self=True`` they must be the same set as the
            queries (pass the same array) and each query's own index is never returned.
        k: neighbours per query, at most N (N - 1 with ``exclude_self``).
        distance: ``"euclidean"``, ``"cosine"`` or ``"dot"``.
        backend: ``"faiss"``, ``"tf"`` or ``"auto"`` (faiss when importable).
        chunk_size: queries searched at once (default: 8,192 for faiss, ~256 MB scores for tf).

    Returns:
        ``(distances [Q, k] float32, indices [Q, k] int64)``, nearest first; for cosine and
        dot the "distances" are similarities (larger is closer).
    """
    backend = resolve_backend(backend)
    same = queries is refs
    queries = prepare_embeddings(queries, distance, "queries")
    refs = queries if same else prepare_embeddings(refs, distance, "refs")
    if exclude_self and not same:
        if not np.array_equal(queries, refs):
            raise ValueError("exclude_self=True needs refs to be the same set as the queries")
        refs = queries
    chunks = list(iter_knn(queries, refs, k, exclude_self, distance, backend, chunk_size))
    if not chunks:
        return np.zeros((0, k), "float32"), np.zeros((0, k), "int64")
    return np.concatenate([c[1] for c in chunks]), np.concatenate([c[2] for c in chunks])
