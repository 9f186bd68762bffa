"""dmltf.evaluation against independent float64 numpy references (brute-force distance
matrices and explicit loops; fine at these sizes). Budget: < 60 s."""
import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import gammaln

from dmltf import evaluation
from dmltf.evaluation import clustering

pytestmark = pytest.mark.backend_neutral

RETRIEVAL = ("recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r")
BACKENDS = ("faiss", "tf")


# ---------------------------------------------------------------- references (float64, loops)
def ref_ranking(queries, refs, distance, exclude_self):
    """Rows of reference indices, nearest first, the query itself removed."""
    q, r = np.asarray(queries, np.float64), np.asarray(refs, np.float64)
    if distance == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
    if distance == "euclidean":
        cost = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    else:
        cost = -(q @ r.T)
    ranking = []
    for i, row in enumerate(cost):
        order = np.argsort(row, kind="stable")
        ranking.append([j for j in order if not (exclude_self and j == i)])
    return np.array(ranking), cost


def ref_retrieval(queries, labels, refs=None, ref_labels=None, distance="euclidean"):
    exclude_self = refs is None
    if exclude_self:
        refs, ref_labels = queries, labels
    ranking, _ = ref_ranking(queries, refs, distance, exclude_self)
    per_query = {name: [] for name in RETRIEVAL}
    lone = 0
    for i, order in enumerate(ranking):
        relevant = [ref_labels[j] == labels[i] for j in order]
        r = sum(relevant)
        if r == 0:
            lone += 1
            continue
        for k in (1, 2, 4, 8):
            per_query[f"recall@{k}"].append(float(any(relevant[:k])))
        per_query["precision@1"].append(float(relevant[0]))
        per_query["r_precision"].append(sum(relevant[:r]) / r)
        hits, precisions = 0, []
        for i_rank in range(r):
            if relevant[i_rank]:
                hits += 1
                precisions.append(hits / (i_rank + 1))
        per_query["map@r"].append(sum(precisions) / r)
    out = {name: (np.mean(v) if v else np.nan) for name, v in per_query.items()}
    out.update(num_queries=len(queries), num_lone_queries=lone)
    return out


def ref_entropy(counts):
    p = np.asarray(counts, np.float64) / np.sum(counts)
    p = p[p > 0]
    return -(p * np.log(p)).sum()


def ref_table(labels, clusters):
    rows, cols = np.unique(labels), np.unique(clusters)
    return np.array([[np.sum((labels == a) & (clusters == b)) for b in cols] for a in rows], np.float64)


def ref_nmi_ami(labels, clusters):
    table = ref_table(labels, clusters)
    n = table.sum()
    a, b = table.sum(1), table.sum(0)
    if len(a) == len(b) == 1:  # sklearn's convention for one class and one cluster
        return 1.0, 1.0
    mi = sum(table[i, j] / n * np.log(n * table[i, j] / (a[i] * b[j]))
             for i in range(len(a)) for j in range(len(b)) if table[i, j] > 0)  # fmt: skip
    mean_h = (ref_entropy(a) + ref_entropy(b)) / 2
    emi = 0.0  # expected MI under the hypergeometric model (Vinh et al. 2010)
    for ai in a:
        for bj in b:
            for nij in range(int(max(1, ai + bj - n)), int(min(ai, bj)) + 1):
                log_p = (gammaln(ai + 1) + gammaln(bj + 1) + gammaln(n - ai + 1) + gammaln(n - bj + 1)
                         - gammaln(n + 1) - gammaln(nij + 1) - gammaln(ai - nij + 1)
                         - gammaln(bj - nij + 1) - gammaln(n - ai - bj + nij + 1))  # fmt: skip
                emi += nij / n * np.log(n * nij / (ai * bj)) * np.exp(log_p)
    nmi = mi / mean_h if mi > 0 else 0.0
    ami = 0.0 if len(a) == 1 or len(b) == 1 else (mi - emi) / (mean_h - emi)
    return nmi, ami


def ref_f1(labels, clusters):
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        same_class, same_cluster = labels[i] == labels[j], clusters[i] == clusters[j]
        tp += same_class and same_cluster
        fp += same_cluster and not same_class
        fn += same_class and not same_cluster
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


# ---------------------------------------------------------------- data
def dataset(seed=0, n=70, dim=8):
    """Random points with classes of 1-7 members (so lone queries) and arbitrary label values,
    a same-label duplicate, and a far-away pair of exact duplicates A, A' with different labels
    (A' stored after A, so a backend that breaks ties by index ranks A before A' itself).
    The other member of each twin's class lies far on the opposite side, so for every other
    query the tie between A and A' cannot change a metric."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(20) * 7 - 30, rng.integers(1, 8, 20))[:n]
    x = rng.normal(size=(len(labels), dim))
    x[5] = x[4]
    labels[5] = labels[4]
    far = np.full((4, dim), 50.0)
    far[2:] *= -1
    far[2, 0] += 0.5
    far[3, 1] += 0.5
    x = np.concatenate([far[:1], x, far[1:]]).astype("float32")
    labels = np.concatenate([[1000], labels, [1001, 1000, 1001]])
    return x, labels


def assert_close(got, want, names, atol=1e-6):
    for name in names:
        if np.isnan(want[name]):
            assert np.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(want[name], abs=atol), name


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("distance", ("euclidean", "cosine", "dot"))
def test_retrieval_metrics_match_reference(backend, distance):
    x, y = dataset()
    got = evaluation.evaluate(x, y, metrics=RETRIEVAL, distance=distance, backend=backend, chunk_size=16)
    want = ref_retrieval(x, y, distance=distance)
    assert want["num_lone_queries"] > 0
    assert_close(got, want, RETRIEVAL)
    assert (got["num_queries"], got["num_lone_queries"]) == (want["num_queries"], want["num_lone_queries"])
    assert list(got) == [*RETRIEVAL, "num_queries", "num_lone_queries"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_separate_query_and_reference_sets(backend):
    x, y = dataset(1)
    q, qy = x[::3], y[::3].copy()
    qy[0] = 12345  # a label absent from the references: lone
    refs, ry = x[1::3], y[1::3]
    got = evaluation.evaluate(tf.constant(q), tf.constant(qy), refs, ry, metrics=RETRIEVAL, backend=backend)
    want = ref_retrieval(q, qy, refs, ry)
    assert want["num_lone_queries"] >= 1
    assert_close(got, want, RETRIEVAL)
    assert got["num_lone_queries"] == want["num_lone_queries"]


def test_one_class_and_all_distinct_labels():
    x, _ = dataset(2)
    one = evaluation.evaluate(x, np.zeros(len(x), int))
    assert_close(one, ref_retrieval(x, np.zeros(len(x), int)), RETRIEVAL)
    assert one["map@r"] == pytest.approx(1.0) and one["num_lone_queries"] == 0
    assert (one["nmi"], one["ami"], one["f1"]) == (1.0, 1.0, 1.0)

    distinct = np.arange(len(x))
    got = evaluation.evaluate(x, distinct)
    assert got["num_lone_queries"] == len(x)
    assert all(np.isnan(got[name]) for name in RETRIEVAL)
    clusters = clustering.kmeans(x, len(x))
    # AMI is 0/0 here (expected MI equals MI), so only NMI and F1 have a defined value.
    assert got["nmi"] == pytest.approx(ref_nmi_ami(distinct, clusters)[0])
    assert got["f1"] == pytest.approx(ref_f1(distinct, clusters)) == 0.0


@pytest.mark.parametrize("kmeans_backend", ("faiss", "sklearn"))
def test_clustering_metrics_match_reference(kmeans_backend):
    x, y = dataset(3)
    got = evaluation.evaluate(x, y, metrics=("nmi", "ami", "f1"), kmeans_backend=kmeans_backend, seed=4)
    clusters = clustering.kmeans(x, len(np.unique(y)), kmeans_backend, seed=4)
    nmi, ami = ref_nmi_ami(y, clusters)
    assert got["nmi"] == pytest.approx(nmi, abs=1e-9)
    assert got["ami"] == pytest.approx(ami, abs=1e-9)
    assert got["f1"] == pytest.approx(ref_f1(y, clusters), abs=1e-12)
    assert got["num_lone_queries"] > 0  # clustering used every query nonetheless

    three = evaluation.evaluate(x, y, metrics=("f1",), num_clusters=3, kmeans_backend=kmeans_backend, seed=4)
    assert three["f1"] == pytest.approx(ref_f1(y, clustering.kmeans(x, 3, kmeans_backend, seed=4)))


def test_clustering_formulas_on_fixed_assignments():
    rng = np.random.default_rng(5)
    cases = [
        (rng.integers(0, 4, 40), rng.integers(0, 5, 40)),
        (np.repeat([0, 1, 2], 5), np.repeat([7, 8, 9], 5)),  # perfect
        (np.zeros(9, int), rng.integers(0, 3, 9)),  # one class
        (rng.integers(0, 3, 9), np.zeros(9, int)),  # one cluster
        (np.arange(8), np.repeat([0, 1], 4)),  # all classes distinct
    ]
    for labels, clusters in cases:
        nmi, ami = ref_nmi_ami(labels, clusters)
        assert clustering.nmi(labels, clusters) == pytest.approx(nmi, abs=1e-9)
        assert clustering.ami(labels, clusters) == pytest.approx(ami, abs=1e-9)
        assert clustering.f1(labels, clusters) == pytest.approx(ref_f1(labels, clusters), abs=1e-12)


@pytest.mark.parametrize("kmeans_backend", ("faiss", "sklearn"))
def test_kmeans_recovers_separated_blobs(kmeans_backend):
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(4), 10)
    x = (rng.normal(size=(40, 3)) * 0.01 + np.eye(4, 3)[labels] * 10).astype("float32")
    clusters = clustering.kmeans(x, 4, kmeans_backend, seed=1)
    assert ref_nmi_ami(labels, clusters)[0] == pytest.approx(1.0)
    assert np.array_equal(clusters, clustering.kmeans(x, 4, kmeans_backend, seed=1))


def test_faiss_and_tf_return_the_same_neighbours():
    rng = np.random.default_rng(7)
    q, refs = rng.normal(size=(30, 6)).astype("float32"), rng.normal(size=(50, 6)).astype("float32")
    for distance, exclude_self in (("euclidean", False), ("cosine", False), ("dot", False), ("euclidean", True)):
        queries = refs if exclude_self else q
        d_faiss, i_faiss = evaluation.knn(queries, refs, 5, exclude_self, distance, "faiss", chunk_size=7)
        d_tf, i_tf = evaluation.knn(queries, refs, 5, exclude_self, distance, "tf", chunk_size=11)
        assert d_faiss.dtype == d_tf.dtype == np.float32 and i_faiss.dtype == i_tf.dtype == np.int64
        np.testing.assert_array_equal(i_faiss, i_tf)
        np.testing.assert_allclose(d_faiss, d_tf, rtol=1e-4, atol=1e-4)
        ranking, cost = ref_ranking(queries, refs, distance, exclude_self)
        np.testing.assert_array_equal(i_faiss, ranking[:, :5])
        want = np.take_along_axis(cost, ranking[:, :5], 1)
        np.testing.assert_allclose(d_faiss, want if distance == "euclidean" else -want, rtol=1e-4, atol=1e-4)
    x, y = dataset(8)
    by_backend = [evaluation.evaluate(x, y, metrics=RETRIEVAL, backend=b) for b in BACKENDS]
    assert_close(*by_backend, RETRIEVAL, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_exclusion_is_by_index_with_duplicates(backend):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(12, 4)).astype("float32")
    x[3] = x[7] = x[9] = x[0]  # four identical points: self need not rank first
    d, i = evaluation.knn(x, x, 3, exclude_self=True, backend=backend)
    assert not (i == np.arange(12)[:, None]).any()
    for row in (0, 3, 7, 9):
        assert set(i[row]) == {0, 3, 7, 9} - {row}
        np.testing.assert_allclose(d[row], 0.0, atol=1e-3)
    _, i1 = evaluation.knn(x, x, 1, exclude_self=True, backend=backend)
    assert (i1[[0, 3, 7, 9], 0] != [0, 3, 7, 9]).all()


def test_bad_input():
    x, y = dataset()
    with pytest.raises(ValueError, match=r"Unknown metric 'recall@0'.*recall@K.*map@r.*f1"):
        evaluation.evaluate(x, y, metrics=("recall@0",))
    with pytest.raises(ValueError, match="Unknown metric 'mAP'"):
        evaluation.evaluate(x, y, metrics=("recall@1", "mAP"))
    with pytest.raises(ValueError, match=f"labels has {len(x) - 1} entries but the embeddings have {len(x)}"):
        evaluation.evaluate(x, y[:-1])
    with pytest.raises(ValueError, match="ref_labels has 3 entries"):
        evaluation.evaluate(x, y, x[:4], y[:3])
    with pytest.raises(ValueError, match="both ref_embeddings and ref_labels"):
        evaluation.evaluate(x, y, ref_embeddings=x)
    with pytest.raises(ValueError, match="Unknown backend 'gpu'.*faiss, tf"):
        evaluation.evaluate(x, y, backend="gpu")
    with pytest.raises(ValueError, match="Unknown distance"):
        evaluation.knn(x, x, 1, distance="manhattan")
    with pytest.raises(ValueError, match="NaN"):
        evaluation.evaluate(np.full((4, 2), np.nan), [0, 0, 1, 1])
    with pytest.raises(ValueError, match=f"k={len(x)} must be between 1 and the {len(x) - 1}"):
        evaluation.knn(x, x, len(x), exclude_self=True)
    assert set(evaluation.DEFAULT_METRICS) - {f"recall@{k}" for k in (1, 2, 4, 8)} < set(evaluation.metric_names())
