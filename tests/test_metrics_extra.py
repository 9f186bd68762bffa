"""map@K, ndcg@K, mrr(@K), per-class averaging, fnmr@fmr, the threshold curve and the embedding
diagnostics against separately written float64 numpy brute force (full distance matrices,
explicit loops). Budget: < 30 s."""
import math

import numpy as np
import pytest
from scipy.stats import entropy

import config
from dmltf import evaluation
from dmltf.evaluation import diagnostics, verification
from dmltf.training import trainer, validation

pytestmark = pytest.mark.backend_neutral

BACKENDS = ("faiss", "tf")
KS = (1, 3, 10, 1000)  # 1000 > every reference set here
NEW = tuple(f"{m}@{k}" for m in ("map", "ndcg", "mrr") for k in KS) + ("mrr",)


# ------------------------------------------------------------------ brute force (float64, loops)
def cost_matrix(q, r, distance):
    q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
    if distance == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
    if distance == "euclidean":
        return np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    return -(q @ r.T)  # smaller is closer


def brute_per_query(q, qy, r=None, ry=None, distance="euclidean"):
    """{metric: [(label, value)]} over the non-lone queries, and the lone count."""
    same = r is None
    if same:
        r, ry = q, qy
    cost = cost_matrix(q, r, distance)
    out, lone = {name: [] for name in NEW}, 0
    for i in range(len(q)):
        order = [j for j in np.argsort(cost[i], kind="stable") if not (same and j == i)]
        rel = [bool(ry[j] == qy[i]) for j in order]
        big_r = sum(rel)
        if big_r == 0:
            lone += 1
            continue
        first = rel.index(True) + 1
        out["mrr"].append((qy[i], 1.0 / first))
        for k in KS:
            top = rel[:k]
            hits, ap = 0, 0.0
            for pos, is_rel in enumerate(top, start=1):
                if is_rel:
                    hits += 1
                    ap += hits / pos
            out[f"map@{k}"].append((qy[i], ap / big_r))
            dcg = sum(1 / math.log2(pos + 1) for pos, is_rel in enumerate(top, start=1) if is_rel)
            idcg = sum(1 / math.log2(pos + 1) for pos in range(1, sum(top) + 1))
            out[f"ndcg@{k}"].append((qy[i], dcg / idcg if idcg else 0.0))
            out[f"mrr@{k}"].append((qy[i], 1.0 / first if first <= k else 0.0))
    return out, lone


def brute_average(pairs, average):
    if not pairs:
        return float("nan")
    if average == "micro":
        return float(np.mean([v for _, v in pairs]))
    classes = sorted({c for c, _ in pairs})
    return float(np.mean([np.mean([v for c2, v in pairs if c2 == c]) for c in classes]))


def data(seed=0):
    """Classes of 1-6 members (so singletons and lone queries), arbitrary label values."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(12) * 5 - 7, rng.integers(1, 7, 12))
    return rng.normal(size=(len(labels), 6)).astype("float32"), labels


def check(got, want_pairs, lone, average):
    for name in NEW:
        want = brute_average(want_pairs[name], average)
        if np.isnan(want):
            assert np.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(want, abs=1e-9), name
    assert got["num_lone_queries"] == lone


# ------------------------------------------------------------------ retrieval metrics
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("distance", ("euclidean", "cosine", "dot"))
@pytest.mark.parametrize("average", ("micro", "macro"))
def test_ranking_metrics_match_brute_force(backend, distance, average):
    x, y = data()
    got = evaluation.evaluate(x, y, metrics=NEW, distance=distance, backend=backend, chunk_size=7, average=average)
    want, lone = brute_per_query(x, y, distance=distance)
    assert lone > 0
    check(got, want, lone, average)


@pytest.mark.parametrize("average", ("micro", "macro"))
def test_separate_references_one_class_and_all_distinct(average):
    x, y = data(1)
    q, qy, r, ry = x[::2], y[::2].copy(), x[1::2], y[1::2]
    qy[0] = 999  # absent from the references: lone
    got = evaluation.evaluate(q, qy, r, ry, metrics=NEW, average=average)
    check(got, *brute_per_query(q, qy, r, ry), average)

    one = np.zeros(len(x), int)
    got = evaluation.evaluate(x, one, metrics=NEW, average=average)
    check(got, *brute_per_query(x, one), average)
    assert got["mrr"] == 1.0 and got["ndcg@1000"] == pytest.approx(1.0) and got["map@1000"] == pytest.approx(1.0)

    distinct = evaluation.evaluate(x, np.arange(len(x)), metrics=NEW, average=average)
    assert distinct["num_lone_queries"] == len(x) and all(np.isnan(distinct[n]) for n in NEW)


def test_k_beyond_the_references_equals_k_at_the_references():
    x, y = data(2)
    n = len(x) - 1
    got = evaluation.evaluate(x, y, metrics=(f"map@{n}", "map@5000", f"ndcg@{n}", "ndcg@5000", f"mrr@{n}", "mrr"))
    assert got[f"map@{n}"] == got["map@5000"] and got[f"ndcg@{n}"] == got["ndcg@5000"]
    assert got[f"mrr@{n}"] == got["mrr"]
    # map@K with K >= every R_q reads every relevant item: it equals mean AP over the full ranking.
    assert got["map@5000"] >= evaluation.evaluate(x, y, metrics=("map@r",))["map@r"]


def test_macro_equals_the_mean_of_class_means_and_differs_from_micro():
    x, y = data(3)
    micro = evaluation.evaluate(x, y, metrics=("recall@1", "map@r"))
    macro = evaluation.evaluate(x, y, metrics=("recall@1", "map@r"), average="macro")
    per_class = []
    for c in np.unique(y):
        if (y == c).sum() > 1:
            rows = np.flatnonzero(y == c)
            per_class.append(np.mean([_recall1(x, y, i) for i in rows]))
    assert macro["recall@1"] == pytest.approx(np.mean(per_class), abs=1e-12)
    assert macro["recall@1"] != pytest.approx(micro["recall@1"])
    with pytest.raises(ValueError, match="Unknown average 'weighted'"):
        evaluation.evaluate(x, y, average="weighted")


def _recall1(x, y, i):
    cost = cost_matrix(x, x, "euclidean")[i]
    cost[i] = np.inf
    return float(y[np.argmin(cost)] == y[i])


# ------------------------------------------------------------------ fnmr@fmr
def brute_pairs(q, qy, r=None, ry=None, distance="euclidean"):
    same = r is None
    if same:
        r, ry = q, qy
    cost = cost_matrix(q, r, distance)
    pos, neg = [], []
    for i in range(len(q)):
        for j in range(len(r)):
            if same and i == j:
                continue
            (pos if qy[i] == ry[j] else neg).append(cost[i, j])
    return np.array(pos), np.array(neg)


@pytest.mark.parametrize("distance", ("euclidean", "cosine"))
def test_fnmr_at_fmr_matches_brute_force(distance):
    x, y = data(4)
    fmrs = (0.0, 0.001, 0.05, 0.1, 0.5, 1.0)
    pos, neg = brute_pairs(x, y, distance=distance)
    for chunk in (None, 5):  # small chunks: the kept smallest negatives are merged across chunks
        got = verification.fnmr_at_fmr(x, y, fmrs, distance=distance, chunk_size=chunk)
        for f in fmrs:
            assert got[f] == pytest.approx(np.mean(pos >= np.quantile(neg, f)), abs=1e-12), (f, chunk)
    q, qy, r, ry = x[::2], y[::2], x[1::2], y[1::2]
    pos, neg = brute_pairs(q, qy, r, ry, distance)
    got = verification.fnmr_at_fmr(q, qy, fmrs, r, ry, distance=distance)
    assert [got[f] for f in fmrs] == pytest.approx([np.mean(pos >= np.quantile(neg, f)) for f in fmrs], abs=1e-12)
    # one class: no negative pair; all distinct: no positive pair
    assert np.isnan(verification.fnmr_at_fmr(x, np.zeros(len(x)), (0.1,))[0.1])
    assert np.isnan(verification.fnmr_at_fmr(x, np.arange(len(x)), (0.1,))[0.1])
    with pytest.raises(ValueError, match="fractions"):
        verification.fnmr_at_fmr(x, y, (10,))
    # OML's docstring example, on given distances
    pos_d, neg_d = np.array([0, 0, 1, 1, 2, 2, 5, 5, 9, 9]), np.array([3, 3, 4, 4, 6, 6, 7, 7, 8, 8])
    assert verification.fnmr_from_distances(pos_d, neg_d, (0.1, 0.5)) == pytest.approx({0.1: 0.4, 0.5: 0.2})


# ------------------------------------------------------------------ threshold curve
@pytest.mark.parametrize("distance", ("euclidean", "cosine"))
def test_threshold_curve_matches_brute_force(distance):
    x, y = data(5)
    curve = verification.threshold_curve(x, y, distance=distance)
    cost = cost_matrix(x, x, distance)
    np.fill_diagonal(cost, np.inf)
    nearest = cost.argmin(1)
    d, ok = cost[np.arange(len(x)), nearest], y[nearest] == y
    thresholds = np.unique(d)
    want_t = thresholds if distance == "euclidean" else -thresholds  # similarities for cosine
    np.testing.assert_allclose(curve["threshold"], want_t, atol=1e-5)
    for i, t in enumerate(thresholds):
        acc = d <= t + 1e-9
        tp, fp = int((acc & ok).sum()), int((acc & ~ok).sum())
        fn, tn = int((~acc & ok).sum()), int((~acc & ~ok).sum())
        assert (curve["tp"][i], curve["fp"][i], curve["fn"][i], curve["tn"][i]) == (tp, fp, fn, tn)
        p = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        assert curve["precision"][i] == pytest.approx(p) and curve["recall"][i] == pytest.approx(rc)
        assert curve["f1"][i] == pytest.approx(2 * p * rc / (p + rc) if p + rc else 0.0)
    assert curve["recall"][-1] == 1.0 or not ok.any()  # the loosest threshold accepts every query
    one = verification.threshold_curve(x, np.zeros(len(x)))
    assert one["precision"].tolist() == [1.0] * len(one["threshold"])


# ------------------------------------------------------------------ diagnostics
@pytest.mark.parametrize("distance", ("euclidean", "cosine"))
def test_class_distances_and_spectrum_match_brute_force(distance):
    x, y = data(6)
    got = diagnostics.class_distances(x, y, distance)
    xs = np.asarray(x, np.float64)
    if distance == "cosine":
        xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
    dist = (lambda a, b: np.linalg.norm(a - b)) if distance == "euclidean" else (lambda a, b: 1 - a @ b / (
        np.linalg.norm(a) * np.linalg.norm(b)))
    intra = []
    for c in np.unique(y):
        m = xs[y == c]
        if len(m) > 1:
            intra.append(np.mean([dist(m[i], m[j]) for i in range(len(m)) for j in range(len(m)) if i != j]))
    centres = [xs[y == c].mean(0) for c in np.unique(y)]
    inter = np.mean([dist(a, b) for i, a in enumerate(centres) for j, b in enumerate(centres) if i != j])
    assert got["dists@intra"] == pytest.approx(np.mean(intra), rel=1e-9)
    assert got["dists@inter"] == pytest.approx(inter, rel=1e-9)
    assert got["dists@intra_over_inter"] == pytest.approx(np.mean(intra) / inter, rel=1e-9)
    s = np.linalg.svd(xs, compute_uv=False)
    for mode in (1, 2, -1, -3):
        tail = s[abs(mode) - 1 :] / s[abs(mode) - 1 :].sum()
        uniform = np.full(len(tail), 1 / len(tail))
        want = entropy(uniform, tail) if mode > 0 else entropy(tail, uniform)
        assert diagnostics.rho_spectrum(x, mode, distance) == pytest.approx(want, rel=1e-9)
    np.testing.assert_allclose(diagnostics.rho_spectrum(x, 0, distance), s / s.sum(), rtol=1e-9)
    # one class: no inter distance; all distinct: no intra distance
    assert np.isnan(diagnostics.class_distances(x, np.zeros(len(x)))["dists@inter"])
    assert np.isnan(diagnostics.class_distances(x, np.arange(len(x)))["dists@intra"])


# ------------------------------------------------------------------ names and flags
def test_the_new_names_reach_evaluate_and_the_eval_metrics_flag():
    x, y = data(7)
    names = ("mrr", "ndcg@10", "map@5", "mrr@3", "fnmr@fmr=0.1", "dists@intra", "dists@inter",
             "dists@intra_over_inter", "rho_spectrum@1")
    got = evaluation.evaluate(x, y, metrics=names)
    assert list(got) == [*names, "num_queries", "num_lone_queries"]
    assert got["fnmr@fmr=0.1"] == verification.fnmr_at_fmr(x, y, (0.1,))[0.1]
    assert got["dists@intra"] == diagnostics.class_distances(x, y)["dists@intra"]
    cfg = config.make(eval_metrics=["mrr", "ndcg@10"])  # what --eval_metrics=mrr,ndcg@10 gives
    assert validation.check_metric_flag(cfg.eval_metrics, "--eval_metrics") == ("mrr", "ndcg@10")
    from_trainer = trainer.evaluate_embeddings(x, y, cfg)  # what a training run's evaluation computes
    want = evaluation.evaluate(x / np.linalg.norm(x, axis=1, keepdims=True) if cfg.eval_l2_normalize else x, y,
                               metrics=("mrr", "ndcg@10"), distance=cfg.eval_distance)
    assert from_trainer["mrr"] == pytest.approx(want["mrr"])
    assert from_trainer["ndcg@10"] == pytest.approx(want["ndcg@10"])
    for bad in ("ndcg@0", "map@", "fnmr@fmr=1.5", "fnmr@fmr=10%", "rho_spectrum@0", "MRR"):
        with pytest.raises(ValueError, match="Unknown metric"):
            validation.check_metric_flag([bad], "--eval_metrics")
    with pytest.raises(ValueError, match="euclidean or cosine"):
        evaluation.evaluate(x, y, metrics=("dists@intra",), distance="dot")
    for name in ("map@K", "ndcg@K", "mrr@K", "mrr", "fnmr@fmr=<FMR>", "rho_spectrum@K"):
        assert name in evaluation.metric_names()
    from dmltf.evaluation.metrics import lower_is_better

    assert [n for n in names if lower_is_better(n)] == ["fnmr@fmr=0.1", "dists@intra", "dists@intra_over_inter",
                                                       "rho_spectrum@1"]


def test_the_eval_average_flag_reaches_a_runs_evaluation():
    """--eval_average=macro: the trainer's evaluation averages per class, as evaluate(average="macro")."""
    rng = np.random.default_rng(4)
    y = np.array([0] * 12 + [1] * 3 + [2] * 3)  # imbalanced: micro and macro differ
    x = (rng.normal(size=(len(y), 6)) + 0.8 * np.eye(6)[y]).astype("float32")
    cfg = config.make(eval_metrics=["recall@1", "map@r"], eval_average="macro")
    got = trainer.evaluate_embeddings(x, y, cfg)
    normed = x / np.linalg.norm(x, axis=1, keepdims=True)
    macro = evaluation.evaluate(normed, y, metrics=("recall@1", "map@r"), average="macro")
    micro = evaluation.evaluate(normed, y, metrics=("recall@1", "map@r"))
    assert got["map@r"] == pytest.approx(macro["map@r"]) and got["recall@1"] == pytest.approx(macro["recall@1"])
    assert abs(macro["map@r"] - micro["map@r"]) > 1e-3
