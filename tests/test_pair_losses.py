"""Pair- and tuple-based losses against independent numpy float64 references.

Every reference below is written from the paper / reference code formula with explicit
loops, separately from dmltf's vectorised code. Each loss is compared on a balanced P x K
batch, ragged labels with singletons, one class only, all labels distinct, and with
separate references; gradients are compared with central differences of the reference.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf import losses
from recorded_losses import central_differences, on_this_backend, value_and_gradients, value_of

RNG = np.random.default_rng(0)
DIM = 4


def make_batches():
    x = RNG.normal(size=(9, DIM))
    refs = RNG.normal(size=(7, DIM))
    return {
        "balanced": (np.repeat(np.arange(3), 3), x, None, None),
        "ragged": (np.array([0, 0, 0, 1, 1, 2, 3, 3, 4]), x, None, None),
        "one_class": (np.zeros(5, int), x[:5], None, None),
        "distinct": (np.arange(5), x[:5], None, None),
        "refs": (np.array([0, 0, 1, 1, 2, 3]), x[:6], np.array([0, 1, 1, 5, 2, 0, 6]), refs),
    }


BATCHES = make_batches()


# ----------------------------------------------------------------- reference helpers
def setup(labels, x, ref_labels, refs):
    same = refs is None
    r_labels, r = (labels, x) if same else (ref_labels, refs)
    pos = [[labels[i] == r_labels[j] and not (same and i == j) for j in range(len(r))] for i in range(len(x))]
    neg = [[labels[i] != r_labels[j] for j in range(len(r))] for i in range(len(x))]
    return same, r_labels, r, np.array(pos), np.array(neg)


def euclid(a, b):
    return math.sqrt(sum((a[k] - b[k]) ** 2 for k in range(len(a))))


def unit(v):
    return v / np.linalg.norm(v)


def cos(a, b):
    return float(unit(a) @ unit(b))


def nz_mean(terms):
    nz = [t for t in terms if t > 0]
    return sum(nz) / len(nz) if nz else 0.0


def lse(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def relu(v):
    return max(v, 0.0)


# ------------------------------------------------------------------------ references
def ref_contrastive(labels, x, ref_labels, refs, pos_margin=0.0, neg_margin=1.0, squared=False):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    p = 2 if squared else 1
    pos_terms = [relu(euclid(x[i], r[j]) - pos_margin) ** p for i, j in zip(*np.nonzero(pos))]
    neg_terms = [relu(neg_margin - euclid(x[i], r[j])) ** p for i, j in zip(*np.nonzero(neg))]
    return nz_mean(pos_terms) + nz_mean(neg_terms)


def ref_margin(labels, x, ref_labels, refs, margin=0.2, beta=1.2, nu=0.0, class_beta=None):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    beta_of = (lambda i: class_beta[labels[i]]) if class_beta is not None else (lambda i: beta)
    terms, beta_sum = [], 0.0
    for i, j in zip(*np.nonzero(pos)):
        terms.append(relu(euclid(x[i], r[j]) - beta_of(i) + margin))
        beta_sum += beta_of(i)
    for i, j in zip(*np.nonzero(neg)):
        terms.append(relu(beta_of(i) - euclid(x[i], r[j]) + margin))
    count = sum(t > 0 for t in terms)
    return (sum(terms) + nu * beta_sum) / max(count, 1)


def ref_lifted(labels, x, ref_labels, refs, margin=1.0):
    _, r_labels, r, pos, neg = setup(labels, x, ref_labels, refs)
    terms = []
    for i, j in zip(*np.nonzero(pos)):
        exps = [math.exp(margin - euclid(x[i], r[k])) for k in range(len(r)) if neg[i, k]]
        exps += [math.exp(margin - euclid(x[k], r[j])) for k in range(len(x)) if labels[k] != r_labels[j]]
        terms.append(0.5 * relu(math.log(sum(exps)) + euclid(x[i], r[j])) ** 2 if exps else 0.0)
    return float(np.mean(terms)) if terms else 0.0


def ref_generalized_lifted(labels, x, ref_labels, refs, pos_margin=0.0, neg_margin=1.0):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    terms = []
    for i in range(len(x)):
        if pos[i].any() and neg[i].any():
            p = lse([euclid(x[i], r[j]) - pos_margin for j in np.flatnonzero(pos[i])])
            n = lse([neg_margin - euclid(x[i], r[j]) for j in np.flatnonzero(neg[i])])
            terms.append(relu(p + n))
    return float(np.mean(terms)) if terms else 0.0


def ref_npair(labels, x, ref_labels, refs, l2_reg=0.002):
    same, r_labels, r, _, _ = setup(labels, x, ref_labels, refs)
    first = {}
    for i, y in enumerate(labels):
        first.setdefault(y, i)
    candidates = {}
    seen = set()
    for j, y in enumerate(r_labels):
        if same and y not in seen:  # same batch: the positive is the class's second sample
            seen.add(y)
            continue
        candidates.setdefault(y, j)
    cols = sorted(candidates.values())
    rows = [i for y, i in first.items() if y in candidates]
    if not rows:
        return 0.0
    xent = []
    for i in rows:
        logits = [float(x[i] @ r[j]) for j in cols]
        xent.append(lse(logits) - float(x[i] @ r[candidates[labels[i]]]))
    reg = np.mean([x[i] @ x[i] for i in rows]) + np.mean([r[j] @ r[j] for j in cols])
    return float(np.mean(xent) + 0.25 * l2_reg * reg)


def ms_mined(x, r, pos, neg, epsilon=0.1):
    s = np.array([[cos(a, b) for b in r] for a in x])
    keep_pos, keep_neg = np.zeros_like(pos), np.zeros_like(neg)
    for i in range(len(x)):
        if pos[i].any() and neg[i].any():
            keep_pos[i] = pos[i] & (s[i] - epsilon < s[i][neg[i]].max())
            keep_neg[i] = neg[i] & (s[i] + epsilon > s[i][pos[i]].min())
    return s, keep_pos, keep_neg


def ref_multi_similarity(labels, x, ref_labels, refs, alpha=2.0, beta=50.0, base=0.5):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    s, kp, kn = ms_mined(x, r, pos, neg)
    total = 0.0
    for i in range(len(x)):
        if kp[i].any() and kn[i].any():
            total += math.log(1 + sum(math.exp(-alpha * (s[i, j] - base)) for j in np.flatnonzero(kp[i]))) / alpha
            total += math.log(1 + sum(math.exp(beta * (s[i, j] - base)) for j in np.flatnonzero(kn[i]))) / beta
    return total / len(x)


def ref_circle(labels, x, ref_labels, refs, m=0.25, gamma=256.0, weights_from=None):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    wx, wr = weights_from if weights_from is not None else (x, r)  # the a_p, a_n weights are constants
    terms = []
    for i in range(len(x)):
        if pos[i].any() and neg[i].any():
            lp = lse([-gamma * relu(1 + m - cos(wx[i], wr[j])) * (cos(x[i], r[j]) - 1 + m) for j in np.flatnonzero(pos[i])])
            ln = lse([gamma * relu(cos(wx[i], wr[j]) + m) * (cos(x[i], r[j]) - m) for j in np.flatnonzero(neg[i])])
            terms.append(math.log1p(math.exp(lp + ln)) if lp + ln < 30 else lp + ln)
    return float(np.mean(terms)) if terms else 0.0


def ref_angular(labels, x, ref_labels, refs, alpha=40.0):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    t2 = math.tan(math.radians(alpha)) ** 2
    terms = []
    for a, p in zip(*np.nonzero(pos)):
        if neg[a].any():
            xa, xp = unit(x[a]), unit(r[p])
            f = [4 * t2 * (xa + xp) @ unit(r[n]) - 2 * (1 + t2) * xa @ xp for n in np.flatnonzero(neg[a])]
            terms.append(math.log(1 + sum(math.exp(v) for v in f)))
    return float(np.mean(terms)) if terms else 0.0


def ref_histogram(labels, x, ref_labels, refs, num_steps=100):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    delta = 2.0 / (num_steps - 1)

    def hist(pairs):
        h = np.zeros(num_steps)
        for i, j in pairs:
            s = cos(x[i], r[j])
            k = min(int(math.floor((s + 1) / delta)), num_steps - 2)
            frac = (s + 1 - k * delta) / delta
            h[k] += 1 - frac
            h[k + 1] += frac
        return h / len(pairs)

    p, n = list(zip(*np.nonzero(pos))), list(zip(*np.nonzero(neg)))
    if not p or not n:
        return 0.0
    return float(np.sum(hist(n) * np.cumsum(hist(p))))


def ref_quadruplet(labels, x, ref_labels, refs, triplet_margin=0.2, quadruplet_margin=0.2, any_index=False):
    _, r_labels, r, pos, neg = setup(labels, x, ref_labels, refs)
    trip, quad = [], []
    for a, p in zip(*np.nonzero(pos)):
        for n in np.flatnonzero(neg[a]):
            dap = euclid(x[a], r[p])
            trip.append(relu(dap - euclid(x[a], r[n]) + triplet_margin))
            if any_index:
                fourth = [l for l in range(len(r)) if l != n]
            else:
                fourth = [l for l in range(len(r)) if r_labels[l] not in (r_labels[n], labels[a])]
            if fourth:
                quad.append(np.mean([relu(dap - euclid(r[n], r[l]) + quadruplet_margin) for l in fourth]))
    return (float(np.mean(trip)) if trip else 0.0) + (float(np.mean(quad)) if quad else 0.0)


def ref_margin_sample_mining(labels, x, ref_labels, refs, margin=0.1):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    if not pos.any() or not neg.any():
        return 0.0
    d = lambda i, j: float(np.sum((unit(x[i]) - unit(r[j])) ** 2))
    hardest_pos = max(d(i, j) for i, j in zip(*np.nonzero(pos)))
    hardest_neg = min(d(i, j) for i, j in zip(*np.nonzero(neg)))
    return relu(hardest_pos - hardest_neg + margin)


def ref_eml(labels, x, ref_labels, refs, beta=1e5):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    d = lambda i, j: float(np.sum((x[i] - r[j]) ** 2))
    terms = []
    for i in range(len(x)):
        if pos[i].any() and neg[i].any():
            xi = np.mean([math.exp(d(i, j)) for j in np.flatnonzero(pos[i])])
            xi *= np.mean([math.exp(-d(i, k)) for k in np.flatnonzero(neg[i])])
            terms.append(math.log(1 + beta * xi) / math.log(1 + beta))
    return float(np.mean(terms)) if terms else 0.0


def semi_hard_triplets(x, r, pos, neg):
    """TF-contrib semi-hard: per positive pair, the closest negative farther than the positive, else the farthest."""
    out = []
    for a, p in zip(*np.nonzero(pos)):
        if not neg[a].any():
            continue
        dap = euclid(x[a], r[p])
        negs = [(euclid(x[a], r[n]), n) for n in np.flatnonzero(neg[a])]
        farther = [t for t in negs if t[0] > dap]
        out.append((a, p, min(farther)[1] if farther else max(negs)[1]))
    return out


def ref_triplet(labels, x, ref_labels, refs, margin=0.1, mining="all", squared=False, soft=False):
    """Mean over the mined triplets of [d(a,p) - d(a,n) + margin]_+ (or its softplus)."""
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    d = (lambda a, b: euclid(a, b) ** 2) if squared else euclid
    if mining == "semi_hard":  # semi-hard selection is the same for d and d^2 (monotone)
        mined = semi_hard_triplets(x, r, pos, neg)
    else:
        mined = [(a, p, n) for a, p in zip(*np.nonzero(pos)) for n in np.flatnonzero(neg[a])]
    hinge = (lambda v: math.log1p(math.exp(v))) if soft else relu
    terms = [hinge(d(x[a], r[p]) - d(x[a], r[n]) + margin) for a, p, n in mined]
    return float(np.mean(terms)) if terms else 0.0


def ref_adapted_triplet(labels, x, ref_labels, refs, margin=0.1, lambda_=1.0):
    _, _, r, pos, neg = setup(labels, x, ref_labels, refs)
    mined = semi_hard_triplets(x, r, pos, neg)
    every = [(a, p, n) for a, p in zip(*np.nonzero(pos)) for n in np.flatnonzero(neg[a])]
    if not every:
        return 0.0
    trip = np.mean([relu(euclid(x[a], r[p]) - euclid(x[a], r[n]) + margin) for a, p, n in mined])
    phi = lambda ts: np.mean([x[a] * (r[n] - r[p]) for a, p, n in ts], axis=0)
    return float(trip + lambda_ * np.sum((phi(mined) - phi(every)) ** 2))


def ref_smooth_ap(labels, x, ref_labels, refs, tau=0.01):
    same, r_labels, r, pos, _ = setup(labels, x, ref_labels, refs)
    sg = lambda v: 1.0 / (1.0 + math.exp(-min(max(v / tau, -50.0), 50.0)))
    terms = []
    for q in range(len(x)):
        if not pos[q].any():
            continue
        # Items: every reference (the query itself included when the references are the batch).
        s = [cos(x[q], r[j]) for j in range(len(r))]
        positives = [j for j in range(len(r)) if r_labels[j] == labels[q]]
        ratios = []
        for i in positives:
            rank_all = 1 + sum(sg(s[j] - s[i]) for j in range(len(r)) if j != i)
            rank_pos = 1 + sum(sg(s[j] - s[i]) for j in positives if j != i)
            ratios.append(rank_pos / rank_all)
        terms.append(1 - np.mean(ratios))
    return float(np.mean(terms)) if terms else 0.0


# name -> (constructor kwargs, reference, reference kwargs)
CASES = {
    # TF-contrib's triplet_semihard_loss (DVML): squared euclidean, margin 1, mean over positive pairs.
    "triplet_semi_hard_contrib": ({"margin": 1.0, "miner": "semi_hard", "distance": "squared_euclidean"}, ref_triplet,
                                  {"margin": 1.0, "mining": "semi_hard", "squared": True}),
    "triplet_all": ({}, ref_triplet, {}),
    "triplet_soft": ({"soft": True, "miner": "semi_hard", "margin": 0.3}, ref_triplet,
                     {"soft": True, "mining": "semi_hard", "margin": 0.3}),
    "contrastive": ({}, ref_contrastive, {}),
    "contrastive_squared": ({"pos_margin": 0.5, "neg_margin": 2.0, "squared": True}, ref_contrastive,
                            {"pos_margin": 0.5, "neg_margin": 2.0, "squared": True}),
    "margin": ({"miner": "all"}, ref_margin, {}),
    "margin_nu": ({"miner": "all", "nu": 0.3, "beta": 2.0}, ref_margin, {"nu": 0.3, "beta": 2.0}),
    "lifted_structure": ({}, ref_lifted, {}),
    "generalized_lifted_structure": ({"pos_margin": 0.2, "neg_margin": 3.0}, ref_generalized_lifted,
                                     {"pos_margin": 0.2, "neg_margin": 3.0}),
    "npair": ({"l2_reg": 0.1}, ref_npair, {"l2_reg": 0.1}),
    "multi_similarity": ({}, ref_multi_similarity, {}),
    "circle": ({}, ref_circle, {}),
    "circle_fine_grained": ({"m": 0.4, "gamma": 80.0}, ref_circle, {"m": 0.4, "gamma": 80.0}),
    "angular": ({}, ref_angular, {}),
    "histogram": ({"num_steps": 11}, ref_histogram, {"num_steps": 11}),
    "quadruplet": ({"miner": "all"}, ref_quadruplet, {}),
    "quadruplet_any_index": ({"miner": "all", "fourth_any_other_index": True, "quadruplet_margin": 1.0},
                             ref_quadruplet, {"any_index": True, "quadruplet_margin": 1.0}),
    "margin_sample_mining": ({}, ref_margin_sample_mining, {}),
    "eml": ({}, ref_eml, {}),
    "adapted_triplet": ({"margin": 0.5}, ref_adapted_triplet, {"margin": 0.5}),
    "smooth_ap": ({}, ref_smooth_ap, {}),
}


def build(case):
    kwargs = CASES[case][0]
    name = case if case in losses.names() else case.rsplit("_", 1)[0]
    name = {"contrastive_squared": "contrastive", "quadruplet_any_index": "quadruplet",
            "circle_fine_grained": "circle", "margin_nu": "margin", "triplet_semi_hard_contrib": "triplet",
            "triplet_all": "triplet", "triplet_soft": "triplet"}.get(case, name)
    return losses.get(name, **kwargs)


def call(loss, labels, x, ref_labels, refs):
    return value_of(lambda x, refs: loss(labels, x, ref_labels, refs), [x, refs], loss.non_trainable_variables)


@pytest.mark.parametrize("case", sorted(CASES))
def test_against_numpy_reference(case):
    loss = build(case)
    _, reference, ref_kwargs = CASES[case]
    for kind in on_this_backend(BATCHES):
        batch = BATCHES[kind]
        want = reference(*batch, **ref_kwargs)
        got = float(call(loss, *batch))
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=f"{case} on the {kind} batch")


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_against_central_differences_of_reference(case):
    loss = build(case)
    _, reference, ref_kwargs = CASES[case]
    labels, x = np.array([0, 0, 1, 1, 1, 2]), np.random.default_rng(5).normal(size=(6, 3))
    if case.startswith("circle"):  # the pair weights a_p, a_n are constants in circle loss
        ref_kwargs = {**ref_kwargs, "weights_from": (x, x)}
    _, (grad,), _ = value_and_gradients(lambda xt: loss(labels, xt), [x])
    numeric = central_differences(lambda a: reference(labels, a, None, None, **ref_kwargs), x)
    scale = max(np.abs(numeric).max(), 1e-3)
    np.testing.assert_allclose(grad / scale, numeric / scale, atol=2e-3, err_msg=case)


def test_margin_learned_class_beta_matches_reference_and_gets_gradient():
    loss = losses.get("margin", miner="all", learn_beta=True, num_classes=5, nu=0.1)
    loss.beta.assign([1.0, 1.1, 1.2, 1.3, 1.4])
    labels, x, _, _ = BATCHES["ragged"]
    value, _, (grad,) = value_and_gradients(lambda xt: loss(labels, xt), [x], [loss.beta])
    want = ref_margin(labels, x, None, None, nu=0.1, class_beta=[1.0, 1.1, 1.2, 1.3, 1.4])
    np.testing.assert_allclose(value, want, rtol=1e-4)
    assert grad.shape == (5,) and np.all(np.isfinite(grad)) and np.any(grad != 0)
    assert loss.lr_multiplier == 50.0
    single = losses.get("margin", miner="all", learn_beta=True)
    assert tuple(single.beta.shape) == (1,)


ALL_CASES = sorted(CASES)


@pytest.mark.parametrize("case", ALL_CASES)
def test_no_valid_tuple_gives_zero_and_zero_gradient(case):
    loss = build(case)
    batches = [(np.array([3]), np.ones((1, DIM)))]  # a single sample: no pair at all
    if not case.startswith(("contrastive", "margin_nu", "margin")) or case == "margin_sample_mining":
        batches.append((np.arange(4), RNG.normal(size=(4, DIM))))  # no positive pair
    for labels, x in batches:
        value, (grad,), _ = value_and_gradients(lambda xt: loss(labels, xt), [x], state=loss.non_trainable_variables)
        assert value == 0.0, case
        assert np.all(grad == 0.0), case  # a missing gradient counts as zeros


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_values_and_gradients_are_finite(policy):
    labels = np.repeat(np.arange(4), 3)
    x16 = tf.constant(RNG.normal(size=(12, 8)) * 3.0, tf.float16)
    keras.mixed_precision.set_global_policy(policy)
    try:
        for case in ALL_CASES:
            loss = build(case)
            with tf.GradientTape() as tape:
                tape.watch(x16)
                value = loss(labels, x16)
            grad = tape.gradient(value, x16)
            assert value.dtype == tf.float32, case
            assert np.isfinite(float(value)) and np.all(np.isfinite(grad.numpy())), case
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("case", ALL_CASES)
def test_config_round_trip(case):
    loss = build(case)
    labels, x, _, _ = BATCHES["ragged"]
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert float(call(again, labels, x, None, None)) == pytest.approx(float(call(loss, labels, x, None, None)), rel=1e-6)


def test_registry_lists_every_loss_and_rejects_unknown_names():
    expected = {"contrastive", "triplet", "margin", "lifted_structure", "generalized_lifted_structure", "npair",
                "multi_similarity", "circle", "angular", "histogram", "quadruplet", "margin_sample_mining", "eml",
                "adapted_triplet", "smooth_ap", "xbm"}
    assert expected <= set(losses.names())
    with pytest.raises(ValueError, match="valid names"):
        losses.get("lifted")
    with pytest.raises(ValueError, match="similarit"):
        losses.get("multi_similarity", distance="euclidean")


def test_constructor_defaults_are_plain_values():
    import inspect

    for name in ["contrastive", "margin", "lifted_structure", "generalized_lifted_structure", "npair",
                 "multi_similarity", "circle", "angular", "histogram", "quadruplet", "margin_sample_mining", "eml",
                 "adapted_triplet", "smooth_ap", "xbm"]:
        for p in inspect.signature(losses.get_class(name).__init__).parameters.values():
            if p.name in ("self", "kwargs"):
                continue
            assert p.default is not inspect.Parameter.empty, (name, p.name)
            assert p.default is None or isinstance(p.default, (bool, int, float, str)), (name, p.name)
