"""More losses ported from pytorch-metric-learning 2.9, against values recorded once from PML.

``tests/fixtures/pml/record_pml_losses2.py`` (run with torch + PML, never by the suite) wrote
``pml_losses2.npz``: the float64 batches of ``pml_losses.npz`` (balanced P x K, ragged labels with
singletons, one class, all labels distinct, separate references), PML's loss values and
gradients with respect to the embeddings, the references and, for the losses with class
weights, the weights (recorded from the float64 weights stored with them, which dmltf copies:
its ``proxies`` are PML's ``W`` transposed). dmltf computes in float32: rtol 1e-5 (atol 1e-6 on
the gradients), looser where a case says why.

Degenerate batches: on a batch without a triplet (one class, all distinct) PML's
dynamic_soft_margin, pnp and the positive part of threshold_consistent_margin return 0 (not NaN)
with a zero gradient, as dmltf does; ranked_list and threshold_consistent_margin still have
their negative part on the all-distinct batch. Classifier losses have terms on every batch.
Deliberate differences are checked against PML's own numbers transformed as documented:
p2s_grad's weight gradient (the tangential part of PML's) and dynamic_soft_margin's embedding
gradient (recorded with PML's histogram detached; PML's own gradient is kept to show it differs).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf import losses
from dmltf.losses.barlow_twins import BarlowTwinsLoss
from dmltf.losses.vicreg import VICRegLoss
from recorded_losses import Recording, at_least_on_this_backend, compiled, on_this_backend, value_and_grads

pytestmark = pytest.mark.backend_neutral

FIXTURE = Recording("pml", "pml_losses2.npz")
batch, recorded = FIXTURE.batch, FIXTURE.recorded
# TensorFlow Similarity 0.17 (TF 2.15), recorded by fixtures/pml/record_tfsim_losses.py on the same inputs
TFSIM = Recording("pml", "tfsim_losses.npz")
BATCH_KINDS = ("balanced", "ragged", "one_class", "distinct", "refs")
C, D = 5, 6
PROXY = {"num_classes": C, "embedding_dim": D}

# fixture case -> (dmltf loss name, constructor kwargs)
CASES = {
    "large_margin_softmax": ("large_margin_softmax", PROXY),
    "large_margin_softmax_m3_s2": ("large_margin_softmax", {**PROXY, "margin": 3, "scale": 2.0}),
    "sphereface": ("sphereface", PROXY),
    "sphereface_m2_s05": ("sphereface", {**PROXY, "margin": 2, "scale": 0.5}),
    "sub_center_arcface": ("sub_center_arcface", PROXY),
    "sub_center_arcface_k2_s16": ("sub_center_arcface", {**PROXY, "margin": 0.3, "scale": 16.0, "sub_centers": 2}),
    "p2s_grad": ("p2s_grad", PROXY),
    "dynamic_soft_margin": ("dynamic_soft_margin", {}),
    "dynamic_soft_margin_bins": ("dynamic_soft_margin", {"min_val": -1.5, "num_bins": 20}),
    "ranked_list": ("ranked_list", {}),
    "ranked_list_weighted": ("ranked_list", {"margin": 1.0, "neg_temperature": 2.0, "pos_temperature": 1.0,
                                             "alpha": 4.0, "imbalance": 0.3}),
    "pnp": ("pnp", {}),
    "pnp_ds": ("pnp", {"variant": "Ds", "anneal": 0.1}),
    "pnp_dq": ("pnp", {"variant": "Dq", "anneal": 0.1, "alpha": 2.0}),
    "pnp_iu": ("pnp", {"variant": "Iu", "anneal": 0.1}),
    "pnp_ib": ("pnp", {"variant": "Ib", "anneal": 0.1, "b": 3.0}),
    "pnp_o_anneal": ("pnp", {"anneal": 0.1}),
    "threshold_consistent_margin": ("threshold_consistent_margin", {}),
    "threshold_consistent_margin_margins": ("threshold_consistent_margin", {
        "lambda_plus": 0.5, "lambda_minus": 2.0, "margin_plus": 0.5, "margin_minus": 0.1}),
    "threshold_consistent_margin_batch_hard": ("threshold_consistent_margin", {
        "margin_plus": 0.5, "margin_minus": 0.1, "miner": "batch_hard"}),
    "dynamic_soft_margin_two_steps": ("dynamic_soft_margin", {}),
    "manifold": ("manifold", PROXY),
    "manifold_ctx": ("manifold", {**PROXY, "lambda_c": 0.5, "alpha": 0.5, "margin": 0.1}),
}
TFSIM_CASES = {
    "soft_nearest_neighbor": {},
    "soft_nearest_neighbor_t05_cosine": {"distance": "cosine", "temperature": 0.5},
}
VICREG = {"vicreg": {}, "vicreg_weights": {"invariance_lambda": 5.0, "variance_mu": 10.0, "covariance_v": 2.0,
                                           "eps": 1e-3}}
# arcface's sqrt(1 - c^2 + 1e-6) (sub_center_arcface's deviation) moves the gradients by up to
# ~1e-6 / (2 sin^2 theta) relative (6e-5 on these batches; 2.4e-6 absolute at scale 64), the
# values stay within 1e-6: (rtol, atol) of the gradients.
GRAD_TOL = {"sub_center_arcface": (2e-4, 1e-5), "sub_center_arcface_k2_s16": (2e-4, 1e-5)}
NAMES = sorted({name for name, _ in CASES.values()} | {"soft_nearest_neighbor"})
PAIR_NAMES = [name for name in NAMES if not issubclass(losses.get_class(name), losses.ProxyLoss)]


def build(case):
    name, kwargs = CASES[case] if case in CASES else ("soft_nearest_neighbor", TFSIM_CASES[case])
    loss = losses.get(name, **kwargs)
    if f"{case}__W" in FIXTURE:  # PML's weight [D, C], dmltf's proxies [C, D]
        loss.proxies.assign(FIXTURE[f"{case}__W"].T.astype("float32"))
    return loss


def expected_weight_grad(case, kind):
    """PML's weight gradient in dmltf's layout; p2s_grad: its tangential part (the docstring's
    deviation: dmltf normalises the weights in the formula; the stored ones have unit rows)."""
    grad = recorded(case, kind)["grad_W"].T
    if CASES[case][0] == "p2s_grad":
        w = FIXTURE[f"{case}__W"].T
        grad = grad - np.sum(grad * w, axis=1, keepdims=True) * w
    return grad


def test_fixture_was_recorded_from_pml_2_9():
    assert str(FIXTURE["pml_version"]) == "2.9.0"
    recorded_cases = {key.split("__")[0] for key in FIXTURE.files if "__" in key} - {"input"}
    assert {*CASES, *VICREG} == recorded_cases


@pytest.mark.parametrize("case", sorted(set(CASES) - {"dynamic_soft_margin_two_steps"}))
def test_values_and_gradients_match_pml(case):
    checked = 0
    for kind in on_this_backend(BATCH_KINDS):
        want = recorded(case, kind)
        if not want:  # PML refuses this batch (references not supported)
            continue
        labels, x, ref_labels, refs = batch(kind)
        loss = build(case)
        value, grad_x, grad_refs, grad_w = value_and_grads(loss, labels, x, ref_labels, refs)
        msg = f"{case} on the {kind} batch"
        assert "nan" not in want, msg
        np.testing.assert_allclose(value, want["value"], rtol=1e-5, atol=1e-7, err_msg=msg)
        rtol, atol = GRAD_TOL.get(case, (1e-5, 1e-6))
        np.testing.assert_allclose(grad_x, want["grad_x"], rtol=rtol, atol=atol, err_msg=msg + " (grad x)")
        if refs is not None:
            np.testing.assert_allclose(grad_refs, want["grad_refs"], rtol=rtol, atol=atol, err_msg=msg + " (grad refs)")
        if "grad_W" in want:
            np.testing.assert_allclose(grad_w[0], expected_weight_grad(case, kind), rtol=rtol, atol=atol,
                                       err_msg=msg + " (grad W)")
        checked += 1
    assert checked >= at_least_on_this_backend(4), case


@pytest.mark.parametrize("kind", ["ragged", "refs"])
def test_dynamic_soft_margin_histogram_momentum_matches_pml(kind):
    """A second call: the histogram mixes the first batch's (balanced) with this one's."""
    loss = build("dynamic_soft_margin_two_steps")
    first_labels, first_x, _, _ = batch("balanced")
    loss(first_labels, first_x.astype("float32"))
    labels, x, ref_labels, refs = batch(kind)
    want = recorded("dynamic_soft_margin_two_steps", kind)
    value, grad_x, grad_refs, _ = value_and_grads(loss, labels, x, ref_labels, refs)
    np.testing.assert_allclose(value, want["value"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_x, want["grad_x"], rtol=1e-5, atol=1e-6)
    if refs is not None:
        np.testing.assert_allclose(grad_refs, want["grad_refs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(loss.histogram.numpy()), 1.0, rtol=1e-6)


def test_dynamic_soft_margin_pml_gradient_flows_through_its_histogram():
    """The documented deviation: PML's own gradient (histogram attached) is not the paper's."""
    for kind in ("balanced", "ragged"):
        pml = FIXTURE[f"dynamic_soft_margin__{kind}__grad_x_pml"]
        detached = recorded("dynamic_soft_margin", kind)["grad_x"]
        assert not np.allclose(pml, detached, rtol=1e-3), kind


def test_dynamic_soft_margin_batch_without_triplet_keeps_the_histogram():
    loss = build("dynamic_soft_margin")
    labels, x, _, _ = batch("balanced")
    loss(labels, x.astype("float32"))
    before = loss.histogram.numpy().copy()
    for kind in ("one_class", "distinct"):
        labels, x, _, _ = batch(kind)
        assert float(loss(labels, x.astype("float32"))) == 0.0
        np.testing.assert_array_equal(loss.histogram.numpy(), before)
    # a difference in the last bin (PML: "index 10 is out of bounds") stays in the last bin
    far = np.array([[1.0, 0.0], [-1.0, 0.01], [1.0, 0.001]], "float32")  # anchor 0: t = d_ap - d_an ~ 2
    fresh = losses.get("dynamic_soft_margin")
    assert np.isfinite(float(fresh(np.array([0, 0, 1]), far)))
    assert fresh.histogram.numpy()[-1] == pytest.approx(0.5, abs=1e-2)  # one of the two triplets


@pytest.mark.parametrize("case", sorted(CASES) + sorted(TFSIM_CASES))
def test_config_round_trip(case):
    loss = build(case)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    for v, w in zip(again.trainable_weights, loss.trainable_weights):
        v.assign(w)
    labels, x, _, _ = batch("ragged")
    x = x.astype("float32")
    assert float(again(labels, x)) == pytest.approx(float(loss(labels, x)), rel=1e-6)


NEGATIVE_PART = {"ranked_list", "threshold_consistent_margin"}  # terms without a positive pair


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_no_pair_gives_zero_and_zero_gradient(name):
    batches = [(np.array([3]), np.ones((1, D)))]
    if name not in NEGATIVE_PART:  # no positive pair
        batches.append((np.arange(4), FIXTURE["input__distinct__x"][:4]))
    for labels, x in batches:
        value, grad_x, _, _ = value_and_grads(losses.get(name), labels, x)
        assert value == 0.0 and np.all(grad_x == 0.0), name


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", NAMES)
def test_finite_under_mixed_precision_and_in_tf_function(name):
    labels = np.repeat(np.arange(4), 3)
    x16 = tf.constant(np.random.default_rng(1).normal(size=(12, 8)), tf.float16)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        kwargs = {"num_classes": 4, "embedding_dim": 8} if name not in PAIR_NAMES else {}
        loss = losses.get(name, **kwargs)
        step = tf.function(lambda x: loss(labels, x))
        with tf.GradientTape() as tape:
            tape.watch(x16)
            value = step(x16)
        grad = tape.gradient(value, x16)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert value.dtype == tf.float32 and np.isfinite(float(value)) and np.all(np.isfinite(grad.numpy())), name


def test_large_margin_softmax_margin_one_is_the_scaled_softmax():
    loss = losses.get("large_margin_softmax", margin=1, scale=0.5, **PROXY)
    w = FIXTURE["large_margin_softmax__W"].T
    loss.proxies.assign(w.astype("float32"))
    labels, x, _, _ = batch("ragged")
    logits = 0.5 * x @ w.T
    want = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(labels)), labels])
    assert float(loss(labels, x.astype("float32"))) == pytest.approx(want, rel=1e-5)


def test_sub_center_arcface_with_one_centre_is_arcface():
    labels, x, _, _ = batch("ragged")
    sub = losses.get("sub_center_arcface", sub_centers=1, scale=16.0, **PROXY)
    arc = losses.get("arcface", scale=16.0, **PROXY)
    arc.proxies.assign(sub.proxies)
    assert float(sub(labels, x.astype("float32"))) == pytest.approx(float(arc(labels, x.astype("float32"))), rel=1e-6)


def test_argument_checks():
    with pytest.raises(ValueError, match="variant"):
        losses.get("pnp", variant="X")
    with pytest.raises(ValueError, match="similarities"):
        losses.get("pnp", distance="euclidean")
    with pytest.raises(ValueError, match="similarities"):
        losses.get("threshold_consistent_margin", distance="euclidean")
    with pytest.raises(ValueError, match="imbalance"):
        losses.get("ranked_list", imbalance=2.0)
    with pytest.raises(ValueError, match="margin"):
        losses.get("large_margin_softmax", margin=0, **PROXY)


# ---------------------------------------------------------------------------------- VICReg
@pytest.mark.parametrize("case", sorted(VICREG))
def test_vicreg_matches_pml(case):
    x, view2 = FIXTURE["input__views__x"], FIXTURE["input__views__view2"]
    want = recorded(case, "views")
    value, grad_x, grad_view2, _ = value_and_grads(VICRegLoss(**VICREG[case]), None, x, None, view2)
    np.testing.assert_allclose(value, want["value"], rtol=1e-5, atol=1e-7, err_msg=case)
    np.testing.assert_allclose(grad_x, want["grad_x"], rtol=1e-5, atol=1e-6, err_msg=case)
    np.testing.assert_allclose(grad_view2, want["grad_refs"], rtol=1e-5, atol=1e-6, err_msg=case)


def test_ranked_list_alpha_none_is_one_plus_half_the_margin():
    labels, x, _, _ = batch("ragged")
    x = x.astype("float32")
    implied = losses.get("ranked_list", margin=1.0, alpha=None, neg_temperature=2.0)
    explicit = losses.get("ranked_list", margin=1.0, alpha=1.5, neg_temperature=2.0)
    assert float(implied(labels, x)) == pytest.approx(float(explicit(labels, x)), rel=1e-6)


# ------------------------------------------------------ fractional weights, numpy references
def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_ranked_list(labels, x, w, margin=1.0, alpha=3.0, tp=1.0, tn=2.0, imbalance=0.3):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    total = 0.0
    for i in range(len(x)):
        parts = []
        for same, violation, temperature in ((True, d[i] - (alpha - margin), tp), (False, alpha - d[i], tn)):
            js = [j for j in range(len(x)) if j != i and (labels[j] == labels[i]) == same and violation[j] > 0
                  and w[j] > 0]
            num = sum(w[j] * np.exp(temperature * violation[j]) * violation[j] for j in js)
            den = sum(w[j] * np.exp(temperature * violation[j]) for j in js) + 1e-5 * w.sum()
            parts.append(num / den)
        total += w[i] * ((1 - imbalance) * parts[0] + imbalance * parts[1]) if w[i] > 0 else 0.0
    return total / w.sum()


def ref_tcm(labels, x, w, lp=0.5, lm=2.0, mp=0.5, mm=0.1):
    s, n = unit(x) @ unit(x).T, len(x)
    pos = [(i, j) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j] and s[i, j] <= mp]
    neg = [(i, j) for i in range(n) for j in range(n) if labels[i] != labels[j] and s[i, j] >= mm]
    mean = lambda pairs, f: (sum(w[i] * w[j] * f(s[i, j]) for i, j in pairs)  # noqa: E731
                             / max(sum(w[i] * w[j] for i, j in pairs), 1e-30))
    return lp * mean(pos, lambda v: mp - v) + lm * mean(neg, lambda v: v - mm)


def ref_pnp(labels, x, w, anneal=0.1):
    s, n = unit(x) @ unit(x).T, len(x)
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-np.clip(v / anneal, -50, 50)))  # noqa: E731
    total = count = 0.0
    for q in range(n):
        positives = [i for i in range(n) if i != q and labels[i] == labels[q] and w[i] > 0]
        if w[q] == 0 or not positives:
            continue
        negatives = [j for j in range(n) if labels[j] != labels[q]]
        ranks = {i: sum(w[j] * sigmoid(s[q, j] - s[q, i]) for j in negatives) for i in positives + [q]}
        term = sum(w[i] * r for i, r in ranks.items()) / sum(w[i] for i in ranks)
        total, count = total + w[q] * term, count + w[q]
    return total / count


FRACTIONAL = {
    "ranked_list": ({"margin": 1.0, "alpha": 3.0, "pos_temperature": 1.0, "neg_temperature": 2.0,
                     "imbalance": 0.3}, ref_ranked_list),
    "threshold_consistent_margin": ({"lambda_plus": 0.5, "lambda_minus": 2.0, "margin_plus": 0.5,
                                     "margin_minus": 0.1}, ref_tcm),
    "pnp": ({"anneal": 0.1}, ref_pnp),
}


@pytest.mark.parametrize("name", sorted(FRACTIONAL))
def test_fractional_weights_match_numpy_reference(name):
    kwargs, reference = FRACTIONAL[name]
    w = np.array([0.5, 1.0, 0.0, 2.0, 0.3, 1.5, 0.0, 0.8, 1.2])
    for kind in ("balanced", "ragged"):
        labels, x, _, _ = batch(kind)
        value = float(losses.get(name, **kwargs)(labels, x.astype("float32"), sample_weight=w.astype("float32")))
        np.testing.assert_allclose(value, reference(labels, x, w), rtol=1e-5, err_msg=f"{name} on {kind}")


# ------------------------------------------------------------- TensorFlow Similarity's losses
TFSIM_VIEWS = {"barlow_twins": {}, "barlow_twins_lambda": {"lambda_": 0.1}}


def test_tfsim_fixture_was_recorded_from_tfsim_0_17():
    assert str(TFSIM["tfsim_version"]) == "0.17.1" and str(TFSIM["tf_version"]).startswith("2.15")
    assert {key.split("__")[0] for key in TFSIM.files if "__" in key} == {*TFSIM_CASES, *TFSIM_VIEWS}


@pytest.mark.parametrize("case", sorted(TFSIM_CASES))
def test_soft_nearest_neighbor_matches_tfsim(case):
    """TFSim ran in float32 (it refuses float64): both sides float32, the same tolerances. Its
    per-sample terms are -log(1e-9 + r); dmltf's -log(r) (the docstring's deviation): the value
    is compared with TFSim's terms so corrected, the gradients where the correction is below
    rtol (every ratio r > 1e-3; the ragged batch under sql2 has r = 3e-7, a 0.3% correction)."""
    compared = 0
    for kind in ("balanced", "ragged", "one_class", "distinct"):
        labels, x, _, _ = batch(kind)
        value, grad_x, _, _ = value_and_grads(losses.get("soft_nearest_neighbor", **TFSIM_CASES[case]), labels, x)
        terms = TFSIM[f"{case}__{kind}__terms"]
        ratios = np.where(terms > 0, np.exp(-terms) - 1e-9, 1.0)
        assert np.mean(terms) == pytest.approx(float(TFSIM[f"{case}__{kind}__value"]), rel=1e-6)
        np.testing.assert_allclose(value, np.mean(-np.log(ratios)), rtol=1e-5, atol=1e-7, err_msg=kind)
        if ratios.min() > 1e-3:
            np.testing.assert_allclose(value, TFSIM[f"{case}__{kind}__value"], rtol=1e-5, atol=1e-7, err_msg=kind)
            np.testing.assert_allclose(grad_x, TFSIM[f"{case}__{kind}__grad_x"], rtol=1e-5, atol=1e-6, err_msg=kind)
            compared += 1
    assert compared >= 3


def test_soft_nearest_neighbor_is_nca_averaged_over_every_sample():
    labels, x, _, _ = batch("ragged")
    x = x.astype("float32")
    snn = float(losses.get("soft_nearest_neighbor", temperature=0.5)(labels, x))
    nca = float(losses.get("nca", softmax_scale=2.0)(labels, x))
    with_positive = sum(np.sum(labels == y) > 1 for y in labels)
    assert snn == pytest.approx(nca * with_positive / len(labels), rel=1e-5)


@pytest.mark.parametrize("case", sorted(TFSIM_VIEWS))
def test_barlow_twins_matches_tfsim(case):
    x, view2 = FIXTURE["input__views__x"], FIXTURE["input__views__view2"]
    value, grad_x, grad_view2, _ = value_and_grads(BarlowTwinsLoss(**TFSIM_VIEWS[case]), None, x, None, view2)
    # TFSim's loss includes its constant margin 1e-12 (dmltf leaves it out)
    np.testing.assert_allclose(value, TFSIM[f"{case}__views__value"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_x, TFSIM[f"{case}__views__grad_x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_view2, TFSIM[f"{case}__views__grad_refs"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [VICRegLoss, BarlowTwinsLoss], ids=["vicreg", "barlow_twins"])
def test_two_view_losses_sample_weight_contract_round_trip_and_two_views(make):
    """0/1 weights give the loss of the kept rows, all-zero weights exactly 0, a zero-weight row
    exactly zero gradient (tests/test_sample_weight.py's contract; neither loss is registered)."""
    x, view2 = FIXTURE["input__views__x"], FIXTURE["input__views__view2"]
    loss = make()
    w = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1], "float32")
    kept = w == 1
    value, grad_x, grad_view2, _ = value_and_grads(loss, None, x, None, view2, sample_weight=w)
    want, want_x, want_view2, _ = value_and_grads(loss, None, x[kept], None, view2[kept])
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad_x[kept], want_x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_view2[kept], want_view2, rtol=1e-4, atol=1e-6)
    assert np.all(grad_x[~kept] == 0.0) and np.all(grad_view2[~kept] == 0.0)
    zero = value_and_grads(loss, None, x, None, view2, sample_weight=np.zeros(9, "float32"))
    assert zero[0] == 0.0 and np.all(zero[1] == 0.0) and np.all(zero[2] == 0.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is make and again.get_config() == loss.get_config()
    traced = compiled(lambda a, b, sw: again(None, a, ref_embeddings=b, sample_weight=sw))
    np.testing.assert_allclose(float(traced(x.astype("float32"), view2.astype("float32"), w)), value, rtol=1e-6)
    with pytest.raises(ValueError, match="second view"):
        loss(None, x)
    assert loss.registry_name not in losses.names()
