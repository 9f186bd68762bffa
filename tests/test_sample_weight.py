"""``sample_weight`` for every loss: 0/1 weights select a subset, zeros drop samples, fractions scale terms.

For every registered loss, on batches with a balanced P x K layout, ragged labels with
singletons, one class, all labels distinct and separate references: 0/1 weights give the loss
(and the gradients) of the kept samples, all-zero weights give exactly 0 and zero gradients,
and a zero-weight sample gets exactly zero gradient. One loss of each family is checked with
fractional weights against a float64 numpy reference written here with explicit loops.
"""
import math

import numpy as np
import pytest

from dmltf import losses
from dmltf.losses.base import SampleWeights
from recorded_losses import compiled, on_this_backend, value_and_gradients

C, D = 5, 4
RNG = np.random.default_rng(11)
X = RNG.normal(size=(9, D))
REFS = RNG.normal(size=(7, D))
BATCHES = {
    "balanced": (np.repeat(np.arange(3), 3), X, None, None),
    "ragged": (np.array([0, 0, 0, 1, 1, 2, 3, 3, 4]), X, None, None),
    "one_class": (np.full(5, 3), X[:5], None, None),
    "distinct": (np.array([4, 2, 0, 1, 3]), X[:5], None, None),
    "refs": (np.array([0, 0, 1, 1, 2, 3]), X[:6], np.array([0, 1, 1, 4, 2, 0, 3]), REFS),
}

# Every registered loss once with small arguments, plus variants that exercise other miners,
# reductions and options. The margin loss's default miner (distance-weighted sampling) draws
# at random, and a subset of the batch is a different draw: it runs with the "all" miner here.
CASES = {
    "adapted_triplet": ("adapted_triplet", {"margin": 0.5}),
    "angular": ("angular", {}),
    "arcface": ("arcface", {"scale": 16.0}),
    "circle": ("circle", {"m": 0.4, "gamma": 16.0}),
    "contrastive": ("contrastive", {}),
    "contrastive_semi_hard_mean": ("contrastive", {"miner": "semi_hard", "reduction": "mean"}),
    "cosface": ("cosface", {"scale": 16.0}),
    "dynamic_soft_margin": ("dynamic_soft_margin", {}),
    "dynamic_soft_margin_bins": ("dynamic_soft_margin", {"min_val": -1.0, "num_bins": 5, "momentum": 0.5}),
    "eml": ("eml", {}),
    "fast_ap": ("fast_ap", {"num_bins": 5}),
    "generalized_lifted_structure": ("generalized_lifted_structure", {"neg_margin": 2.0}),
    "histogram": ("histogram", {"num_steps": 11}),
    "intra_pair_variance": ("intra_pair_variance", {}),
    "intra_pair_variance_triplets": ("intra_pair_variance", {"miner": "semi_hard", "distance": "euclidean"}),
    "large_margin_softmax": ("large_margin_softmax", {}),
    "large_margin_softmax_m3": ("large_margin_softmax", {"margin": 3, "scale": 2.0}),
    "lifted_structure": ("lifted_structure", {}),
    "manifold": ("manifold", {}),
    "manifold_context": ("manifold", {"lambda_c": float("inf"), "alpha": 0.5, "margin": 0.1}),
    "margin": ("margin", {"miner": "all", "nu": 0.1}),
    "margin_sample_mining": ("margin_sample_mining", {}),
    "multi_similarity": ("multi_similarity", {}),
    "multi_similarity_pair_margin": ("multi_similarity", {"miner": {"name": "pair_margin",
                                                                     "config": {"distance": "cosine"}}}),
    "multiple_losses": ("multiple_losses", {"losses": ("contrastive", "ntxent"), "weights": (1.0, 0.5)}),
    "multiple_losses_proxy": ("multiple_losses", {"losses": ("supcon", "proxy_anchor"), "num_classes": C,
                                                  "embedding_dim": D}),
    "nca": ("nca", {}),
    "nca_cosine_batch_hard": ("nca", {"distance": "cosine", "miner": "batch_hard", "softmax_scale": 4.0}),
    "normalized_softmax": ("normalized_softmax", {"temperature": 0.2}),
    "npair": ("npair", {"l2_reg": 0.1}),
    "ntxent": ("ntxent", {"temperature": 0.2}),
    "ntxent_euclidean_semi_hard": ("ntxent", {"distance": "euclidean", "miner": "semi_hard"}),
    "p2s_grad": ("p2s_grad", {}),
    "pnp": ("pnp", {"anneal": 0.1}),
    "pn": ("pn", {"distance": "euclidean"}),
    "pnp_dq_batch_hard": ("pnp", {"variant": "Dq", "anneal": 0.1, "miner": "batch_hard"}),
    "proxy_anchor": ("proxy_anchor", {"ortho_weight": 0.1}),
    "proxy_anchor_dml_tf": ("proxy_anchor", {"variant": "dml_tf", "alpha": 8.0}),
    "proxy_nca": ("proxy_nca", {}),
    "proxy_nca_pp": ("proxy_nca_pp", {}),
    "quadruplet": ("quadruplet", {}),
    "ranked_list": ("ranked_list", {"margin": 1.0, "alpha": 3.0, "pos_temperature": 1.0, "neg_temperature": 2.0}),
    "ranked_list_cosine_semi_hard": ("ranked_list", {"distance": "cosine", "miner": "semi_hard", "alpha": 0.5}),
    "smooth_ap": ("smooth_ap", {"tau": 0.1}),
    "snr_contrastive": ("snr_contrastive", {"neg_margin": 2.0}),
    "soft_nearest_neighbor": ("soft_nearest_neighbor", {"temperature": 4.0}),
    "soft_nearest_neighbor_cosine_batch_hard": ("soft_nearest_neighbor", {"distance": "cosine", "miner": "batch_hard"}),
    "soft_triple": ("soft_triple", {"centers_per_class": 3}),
    "softmax": ("softmax", {}),
    "sphereface": ("sphereface", {"margin": 2}),
    "sub_center_arcface": ("sub_center_arcface", {"scale": 16.0}),
    "supcon": ("supcon", {"temperature": 0.5}),
    "supcon_multi_similarity_miner": ("supcon", {"miner": "multi_similarity"}),
    "threshold_consistent_margin": ("threshold_consistent_margin", {"margin_plus": 0.5, "margin_minus": 0.0}),
    "threshold_consistent_margin_batch_hard": ("threshold_consistent_margin", {"miner": "batch_hard"}),
    "triplet": ("triplet", {"margin": 0.5}),
    "triplet_semi_hard": ("triplet", {"miner": "semi_hard", "margin": 0.5}),
    "triplet_batch_hard_sum": ("triplet", {"miner": "batch_hard", "reduction": "sum"}),
    "tuplet_margin": ("tuplet_margin", {"scale": 16.0}),
    "instance": ("instance", {"gamma": 8.0}),
    "centroid_triplet": ("centroid_triplet", {"margin": 0.5}),
    "centroid_triplet_cosine_soft": ("centroid_triplet", {"margin": 0.5, "soft": True, "distance": "cosine"}),
    "xbm": ("xbm", {"loss": "multi_similarity", "memory_size": 16, "warmup_steps": 0, "embedding_dim": D}),
}


def build(case):
    name, kwargs = CASES[case]
    if issubclass(losses.get_class(name), losses.ProxyLoss):
        kwargs = {"num_classes": C, "embedding_dim": D, **kwargs}
    loss = losses.get(name, **kwargs)
    rng = np.random.default_rng(3)
    for v in loss.trainable_weights:
        v.assign(rng.normal(size=tuple(v.shape)).astype("float32"))
    return loss


def value_and_grads(loss, labels, x, ref_labels=None, refs=None, sample_weight=None, ref_sample_weight=None):
    """The loss and its gradients with respect to the embeddings and the loss's own weights."""
    value, (grad_x, _), grad_w = value_and_gradients(
        lambda x, refs: loss(np.asarray(labels), x, ref_labels, refs, sample_weight=sample_weight,
                             ref_sample_weight=ref_sample_weight),
        [x, refs], loss.trainable_variables, loss.non_trainable_variables)
    return value, grad_x, grad_w


def kinds_on_this_backend():
    return [(kind, BATCHES[kind]) for kind in on_this_backend(BATCHES)]


def zero_one_weights(n, seed):
    w = (np.random.default_rng(seed).uniform(size=n) < 0.6).astype("float32")
    w[seed % n] = 1.0  # keep at least one sample
    return w


def test_every_registered_loss_is_covered():
    assert {name for name, _ in CASES.values()} == set(losses.names())


# ----------------------------------------------------------------------------- 0/1 weights
@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_one_weights_give_the_loss_of_the_kept_samples(case):
    """Any 0/1 weights, npair included: it finds each class's anchor and positive (first and
    second sample) among the kept samples, so no weights break its layout."""
    for kind, (labels, x, ref_labels, refs) in kinds_on_this_backend():
        for seed in range(3):
            w = zero_one_weights(len(labels), seed)
            kept = w == 1
            weighted = value_and_grads(build(case), labels, x, ref_labels, refs, sample_weight=w)
            subset = value_and_grads(build(case), labels[kept], x[kept], ref_labels, refs)
            msg = f"{case} on the {kind} batch, weights {w.astype(int).tolist()}"
            np.testing.assert_allclose(weighted[0], subset[0], rtol=1e-5, atol=1e-6, err_msg=msg)
            np.testing.assert_allclose(weighted[1][kept], subset[1], rtol=1e-4, atol=1e-5, err_msg=msg)
            for got, want in zip(weighted[2], subset[2]):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=msg)


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_one_reference_weights_give_the_loss_of_the_kept_references(case):
    """``ref_sample_weight`` 0/1 equals removing those references (proxy losses ignore references
    and so their weights); the dropped references get exactly zero gradient."""
    labels, x, ref_labels, refs = BATCHES["refs"]
    query_w = np.array([1, 0, 1, 1, 1, 1], "float32")
    for seed in range(3):
        w = zero_one_weights(len(ref_labels), seed)
        kept = w == 1
        for sample_weight in (None, query_w):
            weighted = value_and_grads(build(case), labels, x, ref_labels, refs, sample_weight, ref_sample_weight=w)
            subset = value_and_grads(build(case), labels, x, ref_labels[kept], refs[kept], sample_weight)
            msg = f"{case}, reference weights {w.astype(int).tolist()}, sample_weight {sample_weight}"
            np.testing.assert_allclose(weighted[0], subset[0], rtol=1e-5, atol=1e-6, err_msg=msg)
            np.testing.assert_allclose(weighted[1], subset[1], rtol=1e-4, atol=1e-5, err_msg=msg)
            for got, want in zip(weighted[2], subset[2]):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=msg)
    loss = build(case)  # outside the traced function: JAX creates no variable inside one
    refs_grad = value_and_gradients(lambda r: loss(labels, x.astype("float32"), ref_labels, r, ref_sample_weight=w),
                                    [refs], state=loss.non_trainable_variables)[1][0]
    assert np.all(refs_grad[~kept] == 0.0), case


def test_reference_weights_without_references_are_refused():
    with pytest.raises(ValueError, match="ref_sample_weight given without ref_embeddings"):
        losses.get("contrastive")(np.array([0, 0, 1]), np.ones((3, 2), "float32"), ref_sample_weight=np.ones(3))


@pytest.mark.parametrize("case", sorted(CASES))
def test_all_zero_weights_give_zero_and_zero_gradients(case):
    for kind, (labels, x, ref_labels, refs) in kinds_on_this_backend():
        value, x_grad, weight_grads = value_and_grads(
            build(case), labels, x, ref_labels, refs, sample_weight=np.zeros(len(labels), "float32")
        )
        assert value == 0.0, (case, kind)
        assert np.all(x_grad == 0.0) and all(np.all(g == 0.0) for g in weight_grads), (case, kind)


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_weight_samples_get_exactly_zero_gradient(case):
    for kind, (labels, x, ref_labels, refs) in kinds_on_this_backend():
        w = np.resize(np.array([0.0, 0.5, 1.0, 0.0, 2.0, 0.25], "float32"), len(labels))
        value, x_grad, weight_grads = value_and_grads(build(case), labels, x, ref_labels, refs, sample_weight=w)
        assert np.isfinite(value) and np.all(np.isfinite(x_grad)), (case, kind)
        assert all(np.all(np.isfinite(g)) for g in weight_grads), (case, kind)
        assert np.all(x_grad[w == 0] == 0.0), (case, kind)


@pytest.mark.parametrize("miner", ["all", "semi_hard", "batch_hard", "distance_weighted", "multi_similarity",
                                   "pair_margin"])
def test_miners_never_select_a_zero_weight_sample(miner):
    """What the loss hands its miner: the miner's own choices avoid zero-weight samples."""
    loss = losses.get("contrastive", miner=miner)
    labels, x, _, _ = BATCHES["ragged"]
    w = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1], "float32")
    weights = SampleWeights(w, w)
    xt = x.astype("float32")
    mat = loss.distance.pairwise(xt, xt)
    pos, neg = weights.label_masks(labels, labels, True)
    mined = loss.miner.mine_for_loss(mat, pos, neg, loss.distance, xt, xt)
    dropped = w == 0
    if hasattr(mined, "anchor"):
        used = np.asarray(mined.weight) > 0
        assert used.any()
        for index in (mined.anchor, mined.positive, mined.negative):
            assert not dropped[np.asarray(index)[used]].any(), miner
    else:
        used = (np.asarray(mined.pos) > 0) | (np.asarray(mined.neg) > 0)
        assert used.any() and not used[dropped].any() and not used[:, dropped].any(), miner


def test_xbm_memory_holds_only_the_kept_samples_over_several_steps():
    """Two steps of 0/1-weighted batches against the same steps on the kept samples only."""
    make = lambda: losses.get("xbm", loss="contrastive", memory_size=8, warmup_steps=0, memory_weight=0.5)
    weighted, subset = make(), make()
    rng = np.random.default_rng(4)
    for step in range(3):
        labels, x = rng.integers(0, 3, size=6), rng.normal(size=(6, D)).astype("float32")
        w = zero_one_weights(6, step + 1)
        kept = w == 1
        got, want = float(weighted(labels, x, sample_weight=w)), float(subset(labels[kept], x[kept]))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        assert int(weighted.memory_filled.numpy()) == int(subset.memory_filled.numpy())
        assert int(weighted.memory_pointer.numpy()) == int(subset.memory_pointer.numpy())
        np.testing.assert_array_equal(weighted.memory_labels.numpy(), subset.memory_labels.numpy())
        np.testing.assert_array_equal(weighted.memory_embeddings.numpy(), subset.memory_embeddings.numpy())
    before = weighted.memory_embeddings.numpy().copy()
    assert float(weighted(labels, x, sample_weight=np.zeros(6, "float32"))) == 0.0
    np.testing.assert_array_equal(weighted.memory_embeddings.numpy(), before)  # nothing enqueued


def test_xbm_keeps_the_last_kept_samples_of_a_batch_larger_than_the_memory():
    xbm = losses.get("xbm", loss="contrastive", memory_size=3, warmup_steps=0)
    labels = np.arange(6)
    x = np.arange(6 * D, dtype="float32").reshape(6, D)
    xbm(labels, x, sample_weight=np.array([1, 1, 0, 1, 1, 0], "float32"))
    assert int(xbm.memory_filled.numpy()) == 3 and int(xbm.memory_pointer.numpy()) == 0
    np.testing.assert_array_equal(xbm.memory_labels.numpy(), [1, 3, 4])


def test_sample_weight_works_inside_a_compiled_function():
    loss = build("triplet_semi_hard")
    labels, x, _, _ = BATCHES["ragged"]
    w = zero_one_weights(len(labels), 0)
    traced = compiled(lambda y, e, sw: loss(y, e, sample_weight=sw))
    got = float(traced(labels, x.astype("float32"), w))
    np.testing.assert_allclose(got, float(loss(labels[w == 1], x[w == 1].astype("float32"))), rtol=1e-6)


# ----------------------------------------------------------------------------- fractional weights
def relu(v):
    return max(v, 0.0)


def euclid(a, b):
    return math.sqrt(sum((a[k] - b[k]) ** 2 for k in range(len(a))))


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def pair_masks(labels, w):
    """Positive / negative pairs of the batch with itself, among samples of weight > 0."""
    n = len(labels)
    ok = [[w[i] > 0 and w[j] > 0 for j in range(n)] for i in range(n)]
    pos = np.array([[ok[i][j] and labels[i] == labels[j] and i != j for j in range(n)] for i in range(n)])
    neg = np.array([[ok[i][j] and labels[i] != labels[j] for j in range(n)] for i in range(n)])
    return pos, neg


def ref_contrastive(labels, x, w, reduction="mean_nonzero", pos_margin=0.0, neg_margin=1.0):
    pos, neg = pair_masks(labels, w)

    def reduce(terms):  # terms: (loss, weight) per pair
        total = sum(l * v for l, v in terms)
        count = sum(v for l, v in terms if l > 0) if reduction == "mean_nonzero" else sum(v for _, v in terms)
        return total / count if count > 0 else 0.0

    pos_terms = [(relu(euclid(x[i], x[j]) - pos_margin), w[i] * w[j]) for i, j in zip(*np.nonzero(pos))]
    neg_terms = [(relu(neg_margin - euclid(x[i], x[j])), w[i] * w[j]) for i, j in zip(*np.nonzero(neg))]
    return reduce(pos_terms) + reduce(neg_terms)


def ref_triplet_semi_hard(labels, x, w, margin=0.5):
    """Per positive pair, the closest negative farther than the positive, else the farthest;
    each triplet weighs w_a w_p w_n."""
    pos, neg = pair_masks(labels, w)
    total = count = 0.0
    for a, p in zip(*np.nonzero(pos)):
        negatives = [(euclid(x[a], x[n]), n) for n in np.flatnonzero(neg[a])]
        if not negatives:
            continue
        dap = euclid(x[a], x[p])
        farther = [t for t in negatives if t[0] > dap]
        dan, n = min(farther) if farther else max(negatives)
        weight = w[a] * w[p] * w[n]
        total += weight * relu(dap - dan + margin)
        count += weight
    return total / count if count else 0.0


def ref_multi_similarity(labels, x, w, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
    """Anchor terms weigh w_a, exponentials w_p / w_n; mined pairs as the multi-similarity miner."""
    pos, neg = pair_masks(labels, w)
    total = 0.0
    for a in range(len(labels)):
        if not (pos[a].any() and neg[a].any()):
            continue
        s = [cos(x[a], x[j]) for j in range(len(labels))]
        hardest_neg = max(s[j] for j in np.flatnonzero(neg[a]))
        hardest_pos = min(s[j] for j in np.flatnonzero(pos[a]))
        mined_pos = [j for j in np.flatnonzero(pos[a]) if s[j] - epsilon < hardest_neg]
        mined_neg = [j for j in np.flatnonzero(neg[a]) if s[j] + epsilon > hardest_pos]
        if mined_pos and mined_neg:
            p = math.log(1 + sum(w[j] * math.exp(-alpha * (s[j] - base)) for j in mined_pos)) / alpha
            n = math.log(1 + sum(w[j] * math.exp(beta * (s[j] - base)) for j in mined_neg)) / beta
            total += w[a] * (p + n)
    return total / sum(w) if sum(w) > 0 else 0.0


def ref_npair(labels, x, w, l2_reg=0.1):
    """Anchor / positive: a class's first and second sample of weight > 0; the cross-entropy of
    anchor a weighs w_a w_p, each negative column's exponential its sample's weight."""
    seen = {}
    for i, y in enumerate(labels):
        if w[i] > 0:
            seen.setdefault(y, []).append(i)
    pairs = {y: idx[:2] for y, idx in seen.items() if len(idx) >= 2}
    if not pairs:
        return 0.0
    xent = []
    for y, (a, p) in pairs.items():
        l_p = x[a] @ x[p]
        others = sum(w[q] * math.exp(x[a] @ x[q] - l_p) for z, (_, q) in pairs.items() if z != y)
        xent.append((w[a] * w[p], math.log(1 + others)))
    mean = lambda items: sum(v * t for v, t in items) / sum(v for v, _ in items)
    anchors = mean([(w[a], x[a] @ x[a]) for a, _ in pairs.values()])
    positives = mean([(w[p], x[p] @ x[p]) for _, p in pairs.values()])
    return mean(xent) + 0.25 * l2_reg * (anchors + positives)


def unit_rows(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def ref_proxy_anchor(labels, x, w, params, alpha=32.0, margin=0.1):
    """Per proxy: positives of weight > 0 make it a P+ proxy; each exponential weighs w_x."""
    s = unit_rows(x) @ unit_rows(params["proxies"]).T
    pos_terms, neg_terms = [], []
    for c in range(C):
        positives = [i for i in range(len(labels)) if labels[i] == c and w[i] > 0]
        if positives:
            pos_terms.append(math.log(1 + sum(w[i] * math.exp(-alpha * (s[i, c] - margin)) for i in positives)))
        neg_terms.append(math.log(1 + sum(w[i] * math.exp(alpha * (s[i, c] + margin))
                                          for i in range(len(labels)) if labels[i] != c)))
    return (sum(pos_terms) / len(pos_terms) if pos_terms else 0.0) + sum(neg_terms) / C


def weighted_mean(values, w):
    return float(np.dot(values, w) / np.sum(w)) if np.sum(w) > 0 else 0.0


def ref_proxy_nca(labels, x, w, params, proxy_scale=3.0):
    """Per sample -log(exp(-D_y) / sum_{c != y} exp(-D_c)), weighted by w_i."""
    p = proxy_scale * unit_rows(params["proxies"])
    terms = []
    for i, y in enumerate(labels):
        dist = [float(np.sum((unit_rows(x)[i] - p[c]) ** 2)) for c in range(C)]
        terms.append(dist[y] + math.log(sum(math.exp(-dist[c]) for c in range(C) if c != y)))
    return weighted_mean(np.array(terms), w)


def ref_softmax(labels, x, w, params):
    logits = x @ params["proxies"].T + params["bias"]
    terms = [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, labels)]
    return weighted_mean(np.array(terms), w)


FRACTIONAL = {
    "contrastive": ("contrastive", {"neg_margin": 2.0}, lambda *a: ref_contrastive(*a, neg_margin=2.0)),
    "contrastive_mean": ("contrastive", {"neg_margin": 2.0, "reduction": "mean"},
                         lambda *a: ref_contrastive(*a, reduction="mean", neg_margin=2.0)),
    "triplet_semi_hard": ("triplet", {"miner": "semi_hard", "margin": 0.5}, ref_triplet_semi_hard),
    "multi_similarity": ("multi_similarity", {}, ref_multi_similarity),
    "npair": ("npair", {"l2_reg": 0.1}, ref_npair),
    "proxy_anchor": ("proxy_anchor", {}, ref_proxy_anchor),
    "proxy_nca": ("proxy_nca", {}, ref_proxy_nca),
    "softmax": ("softmax", {}, ref_softmax),
}
WEIGHTS = {
    "mixed": np.array([0.5, 1.0, 0.0, 2.0, 0.3, 1.5, 0.0, 0.8, 1.2]),
    "small": np.full(9, 0.05),  # summed term weights below 1: the mean must not divide by 1
}


@pytest.mark.parametrize("weights", sorted(WEIGHTS))
@pytest.mark.parametrize("case", sorted(FRACTIONAL))
def test_fractional_weights_match_numpy_reference(case, weights):
    name, kwargs, reference = FRACTIONAL[case]
    is_proxy = issubclass(losses.get_class(name), losses.ProxyLoss)
    loss = losses.get(name, **({"num_classes": C, "embedding_dim": D} if is_proxy else {}), **kwargs)
    rng = np.random.default_rng(7)
    params = {v.name: rng.normal(size=tuple(v.shape)) for v in loss.trainable_weights}
    for v in loss.trainable_weights:
        v.assign(params[v.name].astype("float32"))
    f = (lambda y, x_, w: reference(y, x_, w, params)) if is_proxy else reference
    for kind in ("balanced", "ragged"):
        labels, x, _, _ = BATCHES[kind]
        w = WEIGHTS[weights][: len(labels)]
        value, grad, _ = value_and_grads(loss, labels, x.astype("float32"), sample_weight=w.astype("float32"))
        np.testing.assert_allclose(value, f(labels, x, w), rtol=1e-4, atol=1e-6, err_msg=f"{case} on {kind}")
        eps, numeric = 1e-6, np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            up, down = x.copy(), x.copy()
            up[idx] += eps
            down[idx] -= eps
            numeric[idx] = (f(labels, up, w) - f(labels, down, w)) / (2 * eps)
        scale = max(np.abs(numeric).max(), 1e-3)
        np.testing.assert_allclose(grad / scale, numeric / scale, atol=2e-3, err_msg=f"{case} gradient on {kind}")
