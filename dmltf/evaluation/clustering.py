"""k-means of the query embeddings and the clustering metrics NMI, AMI and pair-counting F1.

References: METHODS.md section 6; k-means as in Revisiting-DML ``metrics/__init__.py``
(faiss ``Clustering``, 20 iterations, every point used: min_points_per_centroid = 1, no
subsampling) or scikit-learn ``KMeans`` (DVML port, dml-tf, SoftTriple; see below);
F1 as in Revisiting-DML ``metrics/f1.py`` / GeDML ``metrics.f1_score``.

* NMI = I(Y; C) / mean(H(Y), H(C)) and AMI = (I - E[I]) / (mean(H(Y), H(C)) - E[I]), both
  sklearn with ``average_method="arithmetic"``.
* F1 = 2PR / (P + R), P = TP / #same-cluster pairs, R = TP / #same-class pairs, TP =
  #pairs with the same class and cluster; counted from the class x cluster contingency table,
  so it is O(N) memory. Convention where a ratio is 0/0 (no same-cluster or no same-class
  pair, e.g. all labels distinct): that ratio is 0, and F1 = 0 when P + R = 0.

The k-means is chosen by one spec string, ``backend[:key=value,...]`` (``--eval_kmeans``; the
``kmeans_backend`` of :func:`dmltf.evaluation.evaluate`):

* ``faiss`` (default): ``faiss.Clustering`` with ``niter`` (20), ``nredo`` (1) and ``seed``.
* ``sklearn``: ``sklearn.cluster.KMeans`` with any of ``n_init``, ``max_iter``, ``tol``, ``init``,
  ``algorithm`` and ``random_state``; those not given keep the installed scikit-learn's defaults
  (1.4+: ``n_init="auto"``, i.e. one k-means++ run, ``max_iter=300``, ``algorithm="lloyd"``).
  Older recipes ran scikit-learn's defaults of their day, which differ: the DVML port pinned
  scikit-learn 0.20.4 (requirements.txt), whose ``KMeans(n_clusters=98, random_state=1)``
  (lib/evaluation.py L20) means ``n_init=10, max_iter=300, tol=1e-4, algorithm="auto"`` (elkan
  on dense data): ``sklearn:n_init=10,max_iter=300,tol=1e-4,algorithm=elkan,random_state=1``.

``seed`` (faiss) and ``random_state`` (sklearn) default to the run's ``--seed``. Example:

    >>> parse_kmeans("sklearn:n_init=10,max_iter=300,random_state=1")
    ('sklearn', {'n_init': 10, 'max_iter': 300, 'random_state': 1})

Cost at SOP scale (60,000 points, ~11,000 classes and clusters): NMI and F1 take well under a
second, AMI ~20 s (sklearn's expected mutual information loops over classes x clusters), and
faiss k-means 20 passes of a 60,000 x 11,000 search. Leave ``ami`` out of frequent
in-training evaluations there.
"""
import numpy as np
from sklearn import metrics as sk_metrics
from sklearn.metrics.cluster import contingency_matrix

from dmltf.registry import Registry, number_or_text, parse_spec

KMEANS_BACKENDS = ("faiss", "sklearn")
KMEANS_PARAMETERS = {"faiss": ("niter", "nredo", "seed"),
                     "sklearn": ("n_init", "max_iter", "tol", "init", "algorithm", "random_state")}
FAISS_KMEANS_ITERATIONS = 20


def parse_kmeans(spec):
    """(backend, {parameter: value}) from a k-means spec ``backend[:key=value,...]``."""
    def parameters(backend):
        if backend not in KMEANS_BACKENDS:
            raise ValueError(f"Unknown kmeans_backend {backend!r} (in {spec!r}); valid names: "
                             f"{', '.join(KMEANS_BACKENDS)}")
        return KMEANS_PARAMETERS[backend]

    backend, params = parse_spec(spec, parameters, what="k-means spec")
    return backend, {key: number_or_text(value) for key, value in params.items()}


def check_backend(backend):
    """Raises ValueError unless ``backend`` is a valid k-means spec (see the module docstring)."""
    parse_kmeans(backend)


def kmeans(x, num_clusters, backend="faiss", seed=0):
    """Cluster index of each row of float32 ``x`` [N, D] (k-means with ``num_clusters``); ``backend``
    is a k-means spec (see the module docstring), ``seed`` its seed unless the spec sets one."""
    backend, params = parse_kmeans(backend)
    if not 1 <= num_clusters <= len(x):
        raise ValueError(f"num_clusters={num_clusters} must be between 1 and the {len(x)} points")
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=num_clusters, **{"random_state": seed, **params}).fit_predict(x)
    import faiss

    clustering = faiss.Clustering(x.shape[1], num_clusters)
    clustering.niter = int(params.get("niter", FAISS_KMEANS_ITERATIONS))
    clustering.nredo = int(params.get("nredo", 1))
    clustering.seed = int(params.get("seed", seed))
    clustering.min_points_per_centroid = 1
    clustering.max_points_per_centroid = len(x)  # use every point, no subsampling
    clustering.train(x, faiss.IndexFlatL2(x.shape[1]))
    centroids = faiss.IndexFlatL2(x.shape[1])
    centroids.add(faiss.vector_to_array(clustering.centroids).reshape(num_clusters, x.shape[1]))
    return centroids.search(x, 1)[1][:, 0]


def nmi(labels, clusters):
    return sk_metrics.normalized_mutual_info_score(labels, clusters, average_method="arithmetic")


def ami(labels, clusters):
    return sk_metrics.adjusted_mutual_info_score(labels, clusters, average_method="arithmetic")


def _pairs(counts):
    counts = np.asarray(counts, "float64").ravel()
    return float((counts * (counts - 1) / 2).sum())


def f1(labels, clusters):
    table = contingency_matrix(labels, clusters, sparse=True)
    true_pairs = _pairs(table.data)
    same_cluster, same_class = _pairs(table.sum(axis=0)), _pairs(table.sum(axis=1))
    precision = true_pairs / same_cluster if same_cluster else 0.0
    recall = true_pairs / same_class if same_class else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


METRICS = Registry("clustering metric")
for _name, _fn in (("nmi", nmi), ("ami", ami), ("f1", f1)):
    METRICS.add(_name, _fn)
