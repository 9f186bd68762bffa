"""Search backends of :class:`dmltf.index.Index`: ``exact``, ``ivf`` and ``hnsw``.

Every backend holds prepared float32 vectors (L2-normalised for cosine, by
:func:`dmltf.evaluation.search.prepare_embeddings`) and returns *distances*, smaller is closer:

* ``euclidean``: the L2 distance, not squared (faiss's L2 indexes return squares: rooted here);
* ``cosine``: the cosine distance ``1 - cos`` in [0, 2] (faiss's inner-product indexes on the
  normalised vectors return ``cos``).

Backends:

* ``exact``: brute force through :func:`dmltf.evaluation.search.iter_knn`, the search the
  evaluation uses: faiss ``IndexFlatL2`` / ``IndexFlatIP`` when faiss is importable, else the
  chunked TensorFlow search (``search="faiss"`` / ``"tf"`` force one; both give the same
  neighbours, ties aside). Saved as the vectors themselves (``vectors.npy``), so an exact index
  loads without faiss.
* ``ivf``: faiss ``IndexIVFFlat`` (``index_factory("IVF<nlist>,Flat")``): k-means into
  ``nlist`` cells on the first :meth:`add`, a query visits its ``nprobe`` nearest cells. Default
  ``nlist`` ``round(4 * sqrt(N))`` of that first batch (faiss's wiki guideline is 4 to 16 times
  sqrt(N)), at most N; default ``nprobe`` 8 (faiss's own default is 1). ``nprobe = nlist`` visits
  every cell: the exact result.
* ``hnsw``: faiss ``IndexHNSWFlat`` (``index_factory("HNSW<M>,Flat")``), a graph of ``M``
  links per node built with ``ef_construction`` candidates and searched with ``ef_search``
  (faiss's defaults 32, 40 and 16; 64 for ``ef_search`` here, which is faiss's 16 raised for
  recall). Unlike faiss, ``ef_search`` is raised to ``k`` when smaller (faiss returns at most
  ``ef_search`` neighbours).

An approximate backend may find fewer than ``k`` neighbours (an IVF query whose ``nprobe`` cells
hold fewer than ``k`` vectors): the missing ones have index -1 and distance inf.

Example:
    >>> import numpy as np
    >>> b = BACKENDS.lookup("exact")(dim=1, metric="euclidean", search="tf")
    >>> b.add(np.array([[0.0], [1.0], [3.0]], "float32"))
    >>> d, i = b.nearest(np.array([[2.9]], "float32"), 2)
    >>> i.tolist(), d.astype(float).round(2).tolist()
    ([[2, 1]], [[0.1, 1.9]])
"""
import math
import os

import numpy as np

from dmltf.evaluation.search import iter_knn, resolve_backend
from dmltf.registry import Registry

BACKENDS = Registry("index backend")
METRICS = ("cosine", "euclidean")


def _faiss(what):
    try:
        import faiss
    except ImportError:
        raise ImportError(f"{what} needs faiss (pip install faiss-cpu); the exact backend works without it") from None
    return faiss


def _to_distances(scores, indices, metric, squared):
    """Search scores -> this module's distances: euclidean ones rooted when ``squared`` (faiss),
    cosine similarities -> 1 - cos; missing neighbours (index -1) -> inf."""
    scores = scores.astype(np.float32, copy=False)
    if metric == "euclidean":
        d = np.sqrt(np.maximum(scores, 0.0)) if squared else scores.copy()
    else:
        d = np.maximum(1.0 - scores, 0.0)
    d[indices < 0] = np.inf
    return d


def _check_positive(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Backend:
    """Vectors to search. ``params()`` are the constructor keywords that rebuild it."""

    name = None
    param_names = ()  # the keywords of params() and of the constructor
    files = ()  # the files save() writes in a directory

    def __init__(self, dim, metric):
        if metric not in METRICS:
            raise ValueError(f"Unknown metric {metric!r}; valid names: {', '.join(METRICS)}")
        self.dim, self.metric = _check_positive("dim", dim), metric

    def __len__(self):
        raise NotImplementedError

    search_param_names = ()  # the parameters that set_search_params may change on a built index

    def params(self):
        raise NotImplementedError

    def set_search_params(self, **params):
        """Changes search-time parameters (exact: search; ivf: nprobe; hnsw: ef_search)."""
        unknown = sorted(set(params) - set(self.search_param_names))
        if unknown:
            raise ValueError(f"index backend {self.name!r} cannot change {', '.join(unknown)} after it is built; "
                             f"search-time parameters: {', '.join(self.search_param_names)}")
        probe = type(self)(self.dim, self.metric, **{**self.params(), **params})  # checks the values
        for name in params:
            setattr(self, name, getattr(probe, name))
        if getattr(self, "index", None) is not None:
            self._configure()

    def add(self, vectors):
        """Appends prepared float32 [n, dim] vectors (their indices follow the ones held)."""
        raise NotImplementedError

    def nearest(self, queries, k):
        """(distances float32 [Q, k], indices int64 [Q, k]) of prepared queries, nearest first."""
        raise NotImplementedError

    def save(self, directory):
        raise NotImplementedError

    def load(self, directory):
        """Reads what :meth:`save` wrote in ``directory`` (its files are checked by the caller)."""
        raise NotImplementedError


@BACKENDS.register("exact")
class ExactBackend(Backend):
    name, param_names, files = "exact", ("search",), ("vectors.npy",)
    search_param_names = ("search",)

    def __init__(self, dim, metric, search="auto"):
        super().__init__(dim, metric)
        resolve_backend(search)  # a bad name fails here
        self.search = search
        self.vectors = np.zeros((0, self.dim), np.float32)

    def __len__(self):
        return len(self.vectors)

    def params(self):
        return {"search": self.search}

    def add(self, vectors):
        self.vectors = np.ascontiguousarray(np.concatenate([self.vectors, vectors]))

    def nearest(self, queries, k):
        chunks = list(iter_knn(queries, self.vectors, k, distance=self.metric, backend=resolve_backend(self.search)))
        indices = np.concatenate([c[2] for c in chunks]) if chunks else np.zeros((0, k), np.int64)
        scores = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0, k), np.float32)
        return _to_distances(scores, indices, self.metric, squared=False), indices

    def save(self, directory):
        np.save(os.path.join(directory, "vectors.npy"), self.vectors)

    def load(self, directory):
        path = os.path.join(directory, "vectors.npy")
        vectors = np.load(path, allow_pickle=False)
        if vectors.dtype != np.float32 or vectors.shape[1:] != (self.dim,):
            raise ValueError(f"{path}: expected float32 [N, {self.dim}], got {vectors.dtype} {vectors.shape}")
        self.vectors = vectors


class _FaissBackend(Backend):
    files = ("index.faiss",)

    def __init__(self, dim, metric):
        super().__init__(dim, metric)
        self.faiss = _faiss(f"the {type(self).name} index backend")
        self.faiss_metric = self.faiss.METRIC_L2 if metric == "euclidean" else self.faiss.METRIC_INNER_PRODUCT
        self.index = None

    def __len__(self):
        return 0 if self.index is None else int(self.index.ntotal)

    def nearest(self, queries, k):
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        scores, indices = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        indices = indices.astype(np.int64, copy=False)
        return _to_distances(scores, indices, self.metric, squared=True), indices

    def save(self, directory):
        self.faiss.write_index(self.index, os.path.join(directory, "index.faiss"))

    def load(self, directory):
        path = os.path.join(directory, "index.faiss")
        try:
            index = self.faiss.read_index(path)
        except RuntimeError as e:  # faiss reports an unreadable file as a RuntimeError
            raise ValueError(f"{path}: not a readable faiss index ({str(e).splitlines()[-1]})") from None
        if index.d != self.dim or index.metric_type != self.faiss_metric:
            raise ValueError(f"{path}: holds a {index.d}-dimensional index of metric {index.metric_type}, "
                             f"index.json says {self.dim} and {self.metric}")
        self.index = index
        self._configure()

    def _configure(self):
        """Applies the search-time parameters to a built or loaded index."""


@BACKENDS.register("ivf")
class IVFBackend(_FaissBackend):
    name, param_names, search_param_names = "ivf", ("nlist", "nprobe"), ("nprobe",)

    def __init__(self, dim, metric, nlist=None, nprobe=8):
        super().__init__(dim, metric)
        self.nlist = None if nlist is None else _check_positive("nlist", nlist)
        self.nprobe = _check_positive("nprobe", nprobe)

    def params(self):
        return {"nlist": self.nlist, "nprobe": self.nprobe}

    def add(self, vectors):
        if self.index is None:  # the first batch trains the coarse quantizer
            if self.nlist is None:
                self.nlist = max(1, min(len(vectors), round(4 * math.sqrt(len(vectors)))))
            if len(vectors) < self.nlist:
                raise ValueError(f"an IVF index of nlist={self.nlist} cells is trained on its first add, which "
                                 f"needs at least {self.nlist} vectors; got {len(vectors)}")
            index = self.faiss.index_factory(self.dim, f"IVF{self.nlist},Flat", self.faiss_metric)
            index.train(vectors)
            self.index = index
            self._configure()
        self.index.add(vectors)

    def _configure(self):
        ivf = self.faiss.extract_index_ivf(self.index)
        if self.nlist is not None and ivf.nlist != self.nlist:
            raise ValueError(f"the stored IVF index has nlist={ivf.nlist}, index.json says {self.nlist}")
        self.nlist = int(ivf.nlist)
        if self.nprobe > self.nlist:
            raise ValueError(f"nprobe={self.nprobe} exceeds nlist={self.nlist} (the number of cells)")
        ivf.nprobe = self.nprobe


@BACKENDS.register("hnsw")
class HNSWBackend(_FaissBackend):
    name, param_names, search_param_names = "hnsw", ("m", "ef_construction", "ef_search"), ("ef_search",)

    def __init__(self, dim, metric, m=32, ef_construction=40, ef_search=64):
        super().__init__(dim, metric)
        self.m = _check_positive("m", m)
        self.ef_construction = _check_positive("ef_construction", ef_construction)
        self.ef_search = _check_positive("ef_search", ef_search)

    def params(self):
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def add(self, vectors):
        if self.index is None:
            self.index = self.faiss.index_factory(self.dim, f"HNSW{self.m},Flat", self.faiss_metric)
            self._configure()
        self.index.add(vectors)

    def _configure(self):
        self.index.hnsw.efConstruction = self.ef_construction
        self.index.hnsw.efSearch = self.ef_search

    def nearest(self, queries, k):
        self.index.hnsw.efSearch = max(self.ef_search, k)
        return super().nearest(queries, k)


def make(backend, dim, metric, **params):
    """The backend named ``backend`` with ``params``; unknown parameters are a ValueError naming the valid ones."""
    cls = BACKENDS.lookup(backend)
    unknown = sorted(set(params) - set(cls.param_names))
    if unknown:
        raise ValueError(f"index backend {backend!r} takes no parameter {', '.join(unknown)}; valid: "
                         f"{', '.join(cls.param_names)}")
    return cls(dim, metric, **params)
