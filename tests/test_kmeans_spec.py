"""The k-means spec of the clustering metrics (--eval_kmeans; issue 19 item 3): parsing, that each
backend receives its parameters, and that the trainer's evaluation uses the flag. Budget: ~5 s."""
import numpy as np
import pytest
from sklearn.cluster import KMeans

import config
from dmltf.evaluation import clustering
from dmltf.training.trainer import evaluate_embeddings

SEED_SPEC = "sklearn:n_init=10,max_iter=300,tol=1e-4,algorithm=elkan,random_state=1"


def blobs(n=300, k=12, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (k, d))
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(0, 0.6, (n, d))).astype("float32"), labels


def test_parse_kmeans():
    assert clustering.parse_kmeans("faiss") == ("faiss", {})
    assert clustering.parse_kmeans(SEED_SPEC) == (
        "sklearn", {"n_init": 10, "max_iter": 300, "tol": 1e-4, "algorithm": "elkan", "random_state": 1})
    assert clustering.parse_kmeans("faiss:niter=50, nredo=2") == ("faiss", {"niter": 50, "nredo": 2})
    for bad in ("kmeans", "sklearn:n_init", "sklearn:niter=5", "faiss:n_init=10", "sklearn:n_init="):
        with pytest.raises(ValueError):
            clustering.check_backend(bad)


def test_sklearn_spec_reaches_kmeans():
    x, _ = blobs()
    want = KMeans(n_clusters=12, n_init=10, max_iter=300, tol=1e-4, algorithm="elkan", random_state=1).fit_predict(x)
    np.testing.assert_array_equal(clustering.kmeans(x, 12, SEED_SPEC, seed=0), want)
    one = KMeans(n_clusters=12, n_init=1, random_state=1).fit_predict(x)
    assert not np.array_equal(want, one)  # the data tells n_init=10 from one k-means++ run
    # The run seed fills in what the spec leaves out.
    np.testing.assert_array_equal(clustering.kmeans(x, 12, "sklearn:n_init=1", seed=1), one)


def test_faiss_spec_parameters():
    x, _ = blobs(seed=1)
    a = clustering.kmeans(x, 12, "faiss:niter=1,seed=3", seed=0)
    np.testing.assert_array_equal(a, clustering.kmeans(x, 12, "faiss:niter=1", seed=3))
    assert not np.array_equal(a, clustering.kmeans(x, 12, "faiss:niter=50,seed=3"))


def test_trainer_evaluation_uses_eval_kmeans():
    x, y = blobs(seed=2)
    cfg = config.make(eval_kmeans=SEED_SPEC, eval_metrics=["nmi", "f1"], eval_l2_normalize=False, seed=0)
    got = evaluate_embeddings(x, y, cfg)
    clusters = KMeans(n_clusters=12, n_init=10, max_iter=300, tol=1e-4, algorithm="elkan", random_state=1).fit_predict(x)
    assert got["nmi"] == pytest.approx(clustering.nmi(y, clusters))
    assert got["f1"] == pytest.approx(clustering.f1(y, clusters))
    assert config.make().eval_kmeans == "faiss"
