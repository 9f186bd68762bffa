"""Miners against brute-force numpy selections (float64 distances, explicit loops)."""
import numpy as np
import pytest

from dmltf import losses, miners

RNG = np.random.default_rng(3)
LABELS = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])  # ragged, with singletons 2, 4, 5


def sq_dists(x, y):
    return ((x[:, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)


def masks(labels, ref_labels, same_source):
    same = labels[:, None] == ref_labels[None, :]
    pos = same & ~np.eye(len(labels), len(ref_labels), dtype=bool) if same_source else same
    return pos, ~same


def batches():
    x = RNG.normal(size=(len(LABELS), 5)).astype("float32")
    refs = RNG.normal(size=(9, 5)).astype("float32")
    ref_labels = np.array([0, 1, 1, 3, 6, 6, 2, 0, 7])
    yield LABELS, x, None, None
    yield LABELS, x, ref_labels, refs
    yield np.zeros(6, int), x[:6], None, None  # one class
    yield np.arange(6), x[:6], None, None  # all distinct


@pytest.mark.parametrize("batch", list(batches()), ids=["ragged", "refs", "one_class", "distinct"])
def test_batch_hard(batch):
    labels, x, ref_labels, refs = batch
    same = refs is None
    r_labels, r = (labels, x) if same else (ref_labels, refs)
    t = miners.get("batch_hard")(labels, x, ref_labels, refs)
    d = sq_dists(x, r)
    pos, neg = masks(labels, r_labels, same)
    for a in range(len(labels)):
        valid = pos[a].any() and neg[a].any()
        assert float(t.weight[a]) == float(valid)
        if valid:
            assert int(t.positive[a]) == np.flatnonzero(pos[a])[np.argmax(d[a, pos[a]])]
            assert int(t.negative[a]) == np.flatnonzero(neg[a])[np.argmin(d[a, neg[a]])]


@pytest.mark.parametrize("batch", list(batches()), ids=["ragged", "refs", "one_class", "distinct"])
def test_multi_similarity_and_pair_margin(batch):
    labels, x, ref_labels, refs = batch
    same = refs is None
    r_labels, r = (labels, x) if same else (ref_labels, refs)
    pos, neg = masks(labels, r_labels, same)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True).astype(np.float64)
    s = unit(x) @ unit(r).T
    ms = miners.get("multi_similarity", epsilon=0.1)(labels, x, ref_labels, refs)
    d = np.sqrt(sq_dists(x, r))
    pm = miners.get("pair_margin", pos_margin=1.5, neg_margin=3.0)(labels, x, ref_labels, refs)
    for a in range(len(labels)):
        for j in range(len(r_labels)):
            if pos[a, j]:
                want = neg[a].any() and s[a, j] - 0.1 < s[a, neg[a]].max()
                assert np.asarray(ms.pos)[a, j] == want
                assert np.asarray(pm.pos)[a, j] == (d[a, j] > 1.5)
            if neg[a, j]:
                want = pos[a].any() and s[a, j] + 0.1 > s[a, pos[a]].min()
                assert np.asarray(ms.neg)[a, j] == want
                assert np.asarray(pm.neg)[a, j] == (d[a, j] < 3.0)
    assert not np.asarray(ms.pos)[~pos].any() and not np.asarray(ms.neg)[~neg].any()
    assert not np.asarray(pm.pos)[~pos].any() and not np.asarray(pm.neg)[~neg].any()


def test_distance_weighted_selection_and_distribution():
    # Class 0: 200 copies of one point, so every anchor samples from the same distribution
    # over the 5 negatives (at known distances), 199 draws each.
    dim = 8
    negs = np.zeros((5, dim), "float32")
    angles = np.array([0.3, 0.6, 0.9, 1.2, 1.6])  # one beyond nonzero_loss_cutoff (d = 2 sin(a/2))
    negs[:, 0], negs[:, 1] = np.cos(angles), np.sin(angles)
    anchor = np.zeros((1, dim), "float32")
    anchor[0, 0] = 1.0
    x = np.concatenate([np.repeat(anchor, 200, 0), negs])
    labels = np.array([0] * 200 + [1, 2, 3, 4, 5])
    miner = miners.get("distance_weighted", seed=7)
    t = miner(labels, x)
    a, p, n, w = (np.asarray(v) for v in t)
    used = w > 0
    assert used.sum() == 200 * 199  # one triplet per positive pair; classes 1-5 are singletons
    assert np.all(labels[a[used]] == labels[p[used]]) and np.all(labels[n[used]] != labels[a[used]])
    d = np.clip(2 * np.sin(angles / 2), 0.5, None)
    log_w = (2 - dim) * np.log(d) - (dim - 3) / 2 * np.log(1 - d**2 / 4)
    expected = np.exp(log_w - log_w.max()) * (2 * np.sin(angles / 2) < 1.4)
    expected /= expected.sum()
    counts = np.bincount(n[used & (labels[a] == 0)] - 200, minlength=5)
    assert counts[4] == 0
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)
    again = miners.get("distance_weighted", seed=7)(labels, x)
    np.testing.assert_array_equal(np.asarray(again.negative), n)  # same seed, same draws


def test_distance_weighted_falls_back_to_uniform_negatives():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], "float32")  # negatives at d = 2
    t = miners.get("distance_weighted", seed=0)(np.array([0, 0, 1, 1]), x)
    used = np.asarray(t.weight) > 0
    labels = np.array([0, 0, 1, 1])
    n, a = np.asarray(t.negative)[used], np.asarray(t.anchor)[used]
    assert used.sum() == 4 and np.all(labels[n] != labels[a])


def test_registry_and_config_round_trip():
    assert {"all", "batch_hard", "distance_weighted", "multi_similarity", "pair_margin", "semi_hard"} <= set(
        miners.names()
    )
    for name, kwargs in [("multi_similarity", {"epsilon": 0.3}), ("pair_margin", {"pos_margin": 0.1}),
                         ("distance_weighted", {"cutoff": 0.4, "seed": 3}), ("batch_hard", {"distance": "cosine"})]:
        m = miners.get(name, **kwargs)
        again = miners.get(miners.serialize(m))
        assert type(again) is type(m) and again.get_config() == m.get_config()
    with pytest.raises(ValueError, match="valid names"):
        miners.get("hardest")


@pytest.mark.parametrize("miner", ["semi_hard", "batch_hard"])
def test_large_batch_runs_with_quadratic_memory(miner):
    # 1,024 x 512 on CPU: O(B^2) memory (a [B^2, B] tiling would need 4 GiB).
    x = RNG.normal(size=(1024, 512)).astype("float32")
    labels = np.repeat(np.arange(256), 4)
    loss = losses.get("triplet", margin=0.2, miner=miner)
    assert np.isfinite(float(loss(labels, x)))
