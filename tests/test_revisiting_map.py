"""Revisiting-DML's mAP variants ``map_c``, ``map_c@K`` (``mAP_1000`` = ``map_c@1000``) and ``map_lim``
against float64 numpy references written here: a direct definition over the full ranking, and a
line-by-line port of ``metrics/mAP_c.py`` / ``mAP_1000.py`` / ``mAP_lim.py`` (faiss search of R + 1,
column 0 dropped as the query, singletons averaged in with AP 0)."""
import numpy as np
import pytest

from dmltf import evaluation


def full_ranking(x):
    """Rows of the other images, nearest first (float64 squared euclidean, stable ties)."""
    x = np.asarray(x, np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return [[j for j in np.argsort(row, kind="stable") if j != i] for i, row in enumerate(d)]


def reference(x, y, cutoff):
    """Mean over non-lone queries of sum_{i <= cut-off} P@i rel(i) / class frequency (query included);
    ``cutoff(freq, n)`` gives the cut-off, the ranking ends at its n - 1 entries."""
    y = np.asarray(y)
    values = []
    for i, order in enumerate(full_ranking(x)):
        freq = int((y == y[i]).sum())
        if freq == 1:
            continue
        hits, ap = 0, 0.0
        for rank, j in enumerate(order[: cutoff(freq, len(y))], start=1):
            if y[j] == y[i]:
                hits += 1
                ap += hits / rank
        values.append(ap / freq)
    return float(np.mean(values)), len(y) - len(values)


def revisiting_port(x, y, cutoff):
    """Revisiting-DML's loop, on a ranking that includes the query (first, as faiss returns it when
    no other image ties with it); asks for no more neighbours than exist (no faiss padding)."""
    x = np.asarray(x, np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    labels, freqs = np.unique(y, return_counts=True)
    r = cutoff(freqs.max(), len(y))
    nearest = np.argsort(d, axis=1, kind="stable")[:, : r + 1][:, 1:]
    nn_labels = np.asarray(y)[nearest]
    values = []
    for label, freq in zip(labels, freqs):
        for row in np.where(y == label)[0]:
            k = min(cutoff(freq, len(y)), nn_labels.shape[1])
            occurs = nn_labels[row, :k] == label
            values.append(np.sum(np.cumsum(occurs) * occurs / np.arange(1, k + 1)) / freq)
    return float(np.mean(values))


CUTOFFS = {"map_c": lambda freq, n: freq, "map_c@3": lambda freq, n: 3, "map_c@1000": lambda freq, n: 1000,
           "map_lim": lambda freq, n: min(1023, n)}


def blobs(seed, sizes, dim=4, spread=1.5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(size=(len(sizes), dim)) * spread
    return (centres[y] + rng.normal(size=(len(y), dim))).astype("float32"), y


@pytest.mark.parametrize("backend", ["faiss", "tf"])
def test_against_the_reference_with_a_singleton_and_a_class_bigger_than_the_cutoff(backend):
    x, y = blobs(0, [1, 2, 5, 9, 14])  # a lone query; classes of 5, 9, 14 exceed map_c@3's cut-off
    got = evaluation.evaluate(x, y, metrics=tuple(CUTOFFS), backend=backend)
    assert got["num_lone_queries"] == 1
    for name, cutoff in CUTOFFS.items():
        want, lone = reference(x, y, cutoff)
        assert got[name] == pytest.approx(want, abs=1e-12), name
        # Revisiting averages the lone query in with AP 0: its value is ours x non-lone / all.
        assert revisiting_port(x, y, cutoff) == pytest.approx(want * (len(y) - lone) / len(y), abs=1e-12), name


def test_map_c_at_k_is_map_at_k_with_the_class_frequency_denominator():
    x, y = blobs(1, [3, 4, 6, 7])
    got = evaluation.evaluate(x, y, metrics=("map@4", "map_c@4"))
    assert got["map_c@4"] < got["map@4"]
    # Per query the two differ by the factor R_q / (R_q + 1), which varies with the class size.
    ranking, r = full_ranking(x), np.bincount(y)[y] - 1
    per_query = []
    for i, order in enumerate(ranking):
        rel = y[order[:4]] == y[i]
        per_query.append((np.cumsum(rel) / np.arange(1, 5) * rel).sum() / (r[i] + 1))
    assert got["map_c@4"] == pytest.approx(np.mean(per_query), abs=1e-12)


def test_perfect_ranking_one_class_and_ties():
    # Perfect separation: map_c = mean R_q / (R_q + 1), below 1 (Revisiting's "deflation").
    x, y = blobs(2, [2, 3, 5], spread=100.0)
    got = evaluation.evaluate(x, y, metrics=("map_c", "map_c@1000", "map_lim"))
    deflated = np.mean((np.bincount(y)[y] - 1) / np.bincount(y)[y])
    assert got["map_c"] == got["map_c@1000"] == got["map_lim"] == pytest.approx(deflated, abs=1e-12)
    # One class holding every image: every other image is a hit, (n - 1) / n (faiss would pad the
    # reference's search with index -1, whose label it counts as a hit, giving 1).
    x1 = np.random.default_rng(3).normal(size=(6, 3)).astype("float32")
    assert evaluation.evaluate(x1, np.zeros(6), metrics=("map_c",))["map_c"] == pytest.approx(5 / 6)
    # Exact duplicates inside a class tie with the query: dropping the query by index gives the same
    # labels whichever of the tied images the search ranks first.
    xt = np.repeat(blobs(4, [2, 2, 2])[0], 2, axis=0)
    yt = np.repeat(blobs(4, [2, 2, 2])[1], 2)
    for backend in ("faiss", "tf"):
        got = evaluation.evaluate(xt, yt, metrics=("map_c", "map_c@2"), backend=backend)
        assert got["map_c"] == pytest.approx(reference(xt, yt, CUTOFFS["map_c"])[0], abs=1e-12)
        assert got["map_c@2"] == pytest.approx(reference(xt, yt, lambda f, n: 2)[0], abs=1e-12)


def test_map_lim_cuts_at_1023_on_a_larger_set():
    x, y = blobs(5, [560, 540], dim=2, spread=0.3)  # overlapping classes: hits lie beyond rank 1023
    got = evaluation.evaluate(x, y, metrics=("map_lim", "map_c@1023", "map_c@5000"))
    want, _ = reference(x, y, CUTOFFS["map_lim"])
    assert got["map_lim"] == got["map_c@1023"] == pytest.approx(want, abs=1e-6)  # float32 near-ties
    assert got["map_c@5000"] > got["map_lim"]


def test_names():
    for name in ("map_c", "map_lim", "map_c@K"):
        assert name in evaluation.metric_names()
    with pytest.raises(ValueError, match="Unknown metric 'map_c@0'"):
        evaluation.evaluate(np.zeros((3, 2)), [0, 0, 1], metrics=("map_c@0",))
