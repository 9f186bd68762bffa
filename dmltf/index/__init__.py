"""Search what was trained: an index of labelled embeddings (exact, IVF or HNSW search), saved
to one directory, and a match threshold calibrated for a target precision.

Modules: :mod:`.index` (:class:`Index`, the directory format), :mod:`.backends` (exact /
approximate search, the distance convention), :mod:`.calibration` (the pair threshold).
Command lines: ``train/index.py`` (build an index of a run's split) and ``train/search.py``
(neighbours of image files, printed and drawn as a PNG grid).

Example:
    >>> import numpy as np
    >>> from dmltf.index import Index
    >>> x = np.random.default_rng(0).normal(size=(30, 4)).astype("float32")
    >>> index = Index.build(x, np.arange(30) % 3, metric="euclidean", search="tf")
    >>> index.search(x[:2], k=1).indices.tolist()
    [[0], [1]]
"""
from dmltf.index.backends import BACKENDS, METRICS
from dmltf.index.calibration import Calibration, calibrate
from dmltf.index.index import FORMAT_VERSION, Index, IndexFormatError, SearchResult

__all__ = ["BACKENDS", "Calibration", "FORMAT_VERSION", "Index", "IndexFormatError", "METRICS", "SearchResult",
           "calibrate"]
