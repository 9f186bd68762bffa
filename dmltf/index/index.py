"""An index of labelled embeddings to search, save and load; the index directory format.

The index directory format (format_version 1): one directory, written by :meth:`Index.save`
under a temporary name beside it and renamed when complete (a kill leaves no directory of that
name, or the complete one)::

    INDEX_DIR/
        index.json     {"dmltf_format": "index", "format_version": 1,
                        "metric": "cosine" | "euclidean", "backend": "exact" | "ivf" | "hnsw",
                        "params": {backend parameters: exact {search}, ivf {nlist, nprobe},
                                   hnsw {m, ef_construction, ef_search}},
                        "dim": D, "size": N,
                        "calibration": null | {threshold, target_precision, precision, recall,
                                               num_pairs, num_positive_pairs},
                        "source": {free JSON: what was embedded, e.g. run, which, dataset, split},
                        "files": {name: {"bytes": n, "sha256": hex} for every file below}}
        labels.npy     int64 [N]
        ids.npy        unicode [N]: an id or path per row (default: the row number)
        vectors.npy    float32 [N, D] (backend exact): the prepared vectors
        index.faiss    (backends ivf, hnsw): faiss.write_index of the faiss index

Vectors are stored prepared: L2-normalised for cosine. Distances, thresholds and
:meth:`Index.is_match` use one convention (:mod:`dmltf.index.backends`): euclidean L2 (not
squared), or the cosine distance ``1 - cos``. :meth:`Index.load` checks every file against
``index.json`` (size and SHA-256) before reading it; a missing, damaged, half-written or
other-version directory is an :class:`IndexFormatError` naming the file.

References: TensorFlow Similarity ``Similarity.index / lookup / calibrate`` and
pytorch-metric-learning ``InferenceModel`` (``train_knn``, ``get_nearest_neighbors``,
``is_match``). Deviations: one directory with checksums instead of TFSim's ``save`` of the
model with its index, or PML's bare faiss file; the threshold is calibrated on pairs
(:mod:`dmltf.index.calibration`).

Example:
    >>> import numpy as np
    >>> index = Index.build(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), [0, 1, 2], metric="cosine",
    ...                     ids=["a", "b", "c"], search="tf")
    >>> r = index.search(np.array([[1.0, 0.1]]), k=2)
    >>> r.ids.tolist(), r.labels.tolist(), r.distances.astype(float).round(3).tolist()
    ([['a', 'c']], [[0, 2]], [[0.005, 0.226]])
"""
import hashlib
import json
import os
import shutil
import typing

import numpy as np

from dmltf.evaluation.search import prepare_embeddings, to_numpy
from dmltf.index import backends as backends_lib
from dmltf.index import calibration as calibration_lib

FORMAT_VERSION = 1
INDEX_FILE = "index.json"


class IndexFormatError(ValueError):
    """An index directory that is missing, incomplete, damaged or of another format version."""


class SearchResult(typing.NamedTuple):
    """Per query [Q, k], nearest first: ``distances`` (float32), ``indices`` (int64 rows of the
    index), ``labels`` (int64) and ``ids`` (str); ``matches`` (bool: distance within the
    calibrated threshold) or None when the index is not calibrated. A neighbour an approximate
    backend did not find has index -1, distance inf, label -1 and id ""."""

    distances: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    matches: typing.Optional[np.ndarray]


class Index:
    """Labelled embeddings in a search backend (``exact``, ``ivf``, ``hnsw``: :mod:`.backends`).

    Args:
        dim: embedding dimension.
        metric: ``"cosine"`` (inner product of L2-normalised vectors; distance 1 - cos) or
            ``"euclidean"`` (L2 distance).
        backend: ``"exact"``, ``"ivf"`` or ``"hnsw"``.
        source: free JSON-able dict saved with the index (what was embedded).
        **params: the backend's parameters (exact: search; ivf: nlist, nprobe; hnsw: m,
            ef_construction, ef_search).
    """

    def __init__(self, dim, metric="cosine", backend="exact", source=None, **params):
        self.backend = backends_lib.make(backend, dim, metric, **params)
        self.labels = np.zeros(0, np.int64)
        self.ids = np.zeros(0, str)
        self.calibration = None
        self.source = dict(source or {})

    @classmethod
    def build(cls, embeddings, labels, ids=None, metric="cosine", backend="exact", source=None, **params):
        """A new index of ``embeddings`` [N, D] with ``labels`` [N] (and ``ids`` [N] strings)."""
        embeddings = to_numpy(embeddings, "embeddings")
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-D [num_samples, dim], got shape {embeddings.shape}")
        index = cls(embeddings.shape[1], metric, backend, source, **params)
        index.add(embeddings, labels, ids)
        return index

    @classmethod
    def from_embedder(cls, embedder, split, ids=None, **kwargs):
        """The index of a split (:class:`dmltf.data.Split`) embedded by ``embedder`` (a
        :class:`dmltf.training.inference.Embedder`); ids default to ``<split name>/<row>``."""
        embeddings, labels = embedder.embed(split)
        if ids is None:
            ids = [f"{split.name}/{i}" for i in range(len(labels))]
        return cls.build(embeddings, labels, ids, **kwargs)

    @property
    def metric(self):
        return self.backend.metric

    @property
    def dim(self):
        return self.backend.dim

    @property
    def threshold(self):
        return None if self.calibration is None else self.calibration["threshold"]

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return (f"Index(size={len(self)}, dim={self.dim}, metric={self.metric!r}, backend={self.backend.name!r}, "
                f"params={self.backend.params()}, threshold={self.threshold})")

    def add(self, embeddings, labels, ids=None):
        """Appends rows; ``ids`` default to their row numbers."""
        x = self._prepare(embeddings, "embeddings")
        labels = to_numpy(labels, "labels").reshape(-1)
        if len(labels) != len(x):
            raise ValueError(f"labels has {len(labels)} entries but the embeddings have {len(x)} rows")
        if len(labels) and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        ids = np.arange(len(self), len(self) + len(x)).astype(str) if ids is None else np.asarray(ids, str)
        if ids.shape != (len(x),):
            raise ValueError(f"ids must be {len(x)} strings, one per embedding, got shape {ids.shape}")
        self.backend.add(x)
        self.labels = np.concatenate([self.labels, labels.astype(np.int64)])
        self.ids = np.concatenate([self.ids, ids])

    def search(self, queries, k=8):
        """The ``k`` nearest rows of every query (a :class:`SearchResult`)."""
        q = self._prepare(queries, "queries")
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} must be between 1 and the {len(self)} embeddings of the index")
        distances, indices = self.backend.nearest(q, k)
        found = indices >= 0
        labels = np.where(found, self.labels[np.where(found, indices, 0)], -1)
        ids = np.where(found, self.ids[np.where(found, indices, 0)], "")
        matches = None if self.threshold is None else distances <= self.threshold
        return SearchResult(distances, indices, labels, ids, matches)

    def set_search_params(self, **params):
        """Changes the search-time parameters of the backend (exact: search; ivf: nprobe; hnsw: ef_search)."""
        self.backend.set_search_params(**params)

    def calibrate(self, embeddings, labels, target_precision=0.99, **options):
        """Sets (and returns) the :class:`~dmltf.index.calibration.Calibration` of held-out
        ``embeddings``: the largest pair distance threshold with ``target_precision``.
        ``options``: ``max_rows``, ``seed`` of :func:`dmltf.index.calibration.calibrate`."""
        self._prepare(embeddings, "embeddings")  # the dimension must be the index's
        result = calibration_lib.calibrate(embeddings, labels, self.metric, target_precision, **options)
        self.calibration = result.summary()
        return result

    def pair_distance(self, a, b):
        """Distances [n] of the pairs (a[i], b[i]) (a and b [n, D], or [D] for one pair)."""
        a, b = (self._prepare(np.atleast_2d(to_numpy(v, name, "float32")), name) for v, name in ((a, "a"), (b, "b")))
        if len(a) != len(b):
            raise ValueError(f"a has {len(a)} rows but b has {len(b)}")
        a, b = a.astype(np.float64), b.astype(np.float64)  # float64, as calibrate measures the pairs
        if self.metric == "euclidean":
            return np.sqrt(np.maximum((a * a).sum(axis=1) + (b * b).sum(axis=1) - 2 * (a * b).sum(axis=1), 0.0))
        return np.maximum(1.0 - (a * b).sum(axis=1), 0.0)

    def is_match(self, a, b):
        """Whether each pair (a[i], b[i]) is within the calibrated threshold (bool [n])."""
        if self.threshold is None:
            raise ValueError("the index has no threshold: call calibrate() first")
        return self.pair_distance(a, b) <= self.threshold

    def _prepare(self, x, name):
        x = to_numpy(x, name)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must be [n, {self.dim}] (the index dimension), got shape {x.shape}")
        return prepare_embeddings(x, self.metric, name)

    # -- the directory ----------------------------------------------------------------------
    def save(self, path, overwrite=False):
        """Writes the index directory ``path`` (module docstring) under a temporary name, then
        renames it; an existing ``path`` is an error unless ``overwrite``."""
        path = os.path.abspath(os.fspath(path))
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(f"{path} exists: choose another name, or overwrite it explicitly")
        parent, name = os.path.split(path)
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"cannot write the index {path}: directory {parent} does not exist")
        partial, old = (os.path.join(parent, f".{name}.{what}-{os.getpid()}") for what in ("partial", "old"))
        try:
            os.mkdir(partial)
            np.save(os.path.join(partial, "labels.npy"), self.labels)
            np.save(os.path.join(partial, "ids.npy"), self.ids)
            self.backend.save(partial)
            files = {f: _describe(os.path.join(partial, f)) for f in ("labels.npy", "ids.npy", *self.backend.files)}
            meta = {"dmltf_format": "index", "format_version": FORMAT_VERSION, "metric": self.metric,
                    "backend": self.backend.name, "params": self.backend.params(), "dim": self.dim,
                    "size": len(self), "calibration": self.calibration, "source": self.source, "files": files}
            with open(os.path.join(partial, INDEX_FILE), "w") as f:
                json.dump(meta, f, indent=1)
            if os.path.lexists(path):  # overwrite: the old index is moved aside, then removed
                os.rename(path, old)
            os.rename(partial, path)
        finally:
            for leftover in (partial, old):
                if os.path.lexists(leftover):
                    shutil.rmtree(leftover)
        return path

    @classmethod
    def load(cls, path):
        """The index saved in directory ``path``; :class:`IndexFormatError` names what is wrong."""
        path = os.fspath(path)
        meta_path = os.path.join(path, INDEX_FILE)
        if not os.path.isdir(path):
            raise IndexFormatError(f"{path}: no such index directory")
        if not os.path.isfile(meta_path):
            raise IndexFormatError(f"{meta_path} not found: {path} is not an index directory written by "
                                   f"Index.save (or its writing did not finish)")
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{meta_path} is damaged: {e}") from None
        if not isinstance(meta, dict) or meta.get("dmltf_format") != "index":
            raise IndexFormatError(f"{meta_path} does not describe a dmltf index")
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(f"{meta_path}: format_version {meta.get('format_version')!r}, this dmltf reads "
                                   f"version {FORMAT_VERSION}")
        try:
            index = cls(meta["dim"], meta["metric"], meta["backend"], meta["source"], **meta["params"])
            files, size = meta["files"], meta["size"]
        except (KeyError, TypeError) as e:
            raise IndexFormatError(f"{meta_path} lacks or has a bad entry: {e}") from None
        except ValueError as e:
            raise IndexFormatError(f"{meta_path}: {e}") from None
        for name in ("labels.npy", "ids.npy", *index.backend.files):
            file = os.path.join(path, name)
            if name not in files:
                raise IndexFormatError(f"{meta_path} lists no file {name}")
            if not os.path.isfile(file):
                raise IndexFormatError(f"{file} is missing")
            if _describe(file) != files[name]:
                raise IndexFormatError(f"{file} is damaged: its size or SHA-256 differs from what {INDEX_FILE} "
                                       f"recorded ({files[name]['bytes']} bytes)")
        try:
            index.labels = np.load(os.path.join(path, "labels.npy"), allow_pickle=False)
            index.ids = np.load(os.path.join(path, "ids.npy"), allow_pickle=False)
            index.backend.load(path)
        except ValueError as e:
            raise IndexFormatError(str(e) if path in str(e) else f"{path}: {e}") from None
        for what, n in (("labels.npy", len(index.labels)), ("ids.npy", len(index.ids)),
                        (index.backend.files[0], len(index.backend))):
            if n != size:
                raise IndexFormatError(f"{os.path.join(path, what)} holds {n} rows, {INDEX_FILE} says {size}")
        index.calibration = meta.get("calibration")
        return index


def _describe(path, block=2**24):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}
