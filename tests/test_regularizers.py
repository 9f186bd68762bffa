"""Regularizers ported from pytorch-metric-learning 2.9, against values recorded once from PML.

``tests/fixtures/pml/record_pml_regularizers.py`` (run with torch + PML, never by the suite)
wrote ``pml_regularizers.npz``: the float64 batches of ``pml_losses.npz`` (balanced, ragged with
singletons, one class, all distinct) and a fixed weight matrix of 5 classes x 2 centres, PML's
value and gradient of each regularizer on those rows, and two losses with a regularizer:
``NTXentLoss`` with ``LpRegularizer`` (``embedding_reg_weight=0.5``) and
``LargeMarginSoftmaxLoss`` with ``RegularFaceRegularizer`` on its class weights
(``weight_reg_weight=2``), values and gradients wrt the embeddings and the weights. dmltf
computes in float32: rtol 1e-5, atol 1e-6 on the gradients.

Deliberate differences (see dmltf/losses/base.py): an embedding regularizer is row-wise (lp,
zero_mean) and sample-weighted; PML has no sample weights, the reference followed for them
is the module's contract (a zero-weight sample is dropped), checked against the regularizer of
the kept rows.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from dmltf import losses, regularizers
from dmltf.methods import MetricLearner
from dmltf.models import build_embedding_model
from dmltf.training import builders
from recorded_losses import Recording, at_least_on_this_backend, on_this_backend, value_and_gradients, value_and_grads

pytestmark = pytest.mark.backend_neutral

FIXTURE = Recording("pml", "pml_regularizers.npz")
BATCH_KINDS = ("balanced", "ragged", "one_class", "distinct")
C, D = 5, 6
# fixture case -> dmltf spec
ALONE = {
    "lp": "lp",
    "lp_p1_power2": "lp:p=1,power=2",
    "zero_mean": "zero_mean",
    "center_invariant": "center_invariant",
    "regular_face": "regular_face",
    "sparse_centers": "sparse_centers:num_classes=5,centers_per_class=2",
    "sparse_centers_3x3": "sparse_centers:num_classes=3,centers_per_class=3",
}
COMBINED = {
    "ntxent_lp": ("ntxent", {"embedding_regularizer": "lp", "embedding_reg_weight": 0.5}, "embedding_reg"),
    "large_margin_softmax_regular_face": ("large_margin_softmax", {"num_classes": C, "embedding_dim": D,
                                          "weight_regularizer": "regular_face", "weight_reg_weight": 2.0},
                                          "weight_reg"),
}


def numpy_regularizer(case, w):
    """Independent float64 formulas (the papers' / PML's definitions)."""
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = unit @ unit.T
    if case == "lp":
        return np.mean(np.linalg.norm(w, axis=1))
    if case == "lp_p1_power2":
        return np.mean(np.sum(np.abs(w), axis=1) ** 2)
    if case == "zero_mean":
        return np.mean(np.abs(w.sum(axis=1)))
    if case == "center_invariant":
        n = np.sum(w ** 2, axis=1)
        return np.mean((n - n.mean()) ** 2 / 4)
    if case == "regular_face":
        return np.mean(np.max(np.where(np.eye(len(w), dtype=bool), -np.inf, cos), axis=1))
    k = 2 if case == "sparse_centers" else 3
    dists = [np.linalg.norm(unit[i] - unit[j]) for i in range(len(w)) for j in range(i + 1, len(w)) if i // k == j // k]
    return np.sum(dists) / (2 * len(dists))


def value_and_grad(reg, rows, row_weights=None):
    value, (grad,), _ = value_and_gradients(lambda x: reg(x, row_weights), [rows])
    return value, grad


def test_fixture_was_recorded_from_pml_2_9():
    assert str(FIXTURE["pml_version"]) == "2.9.0"
    recorded_cases = {key.split("__")[0] for key in FIXTURE.files if "__" in key} - {"input"}
    assert {*ALONE, *COMBINED} == recorded_cases


@pytest.mark.parametrize("case", sorted(ALONE))
def test_regularizer_matches_pml_and_numpy(case):
    reg = regularizers.get(ALONE[case])
    checked = 0
    for kind in ("weights", *on_this_backend(BATCH_KINDS)):
        want = FIXTURE.recorded(case, kind)
        if not want:  # sparse_centers needs num_classes x centers_per_class rows
            continue
        rows = FIXTURE[f"input__{kind}__x"]
        value, grad = value_and_grad(reg, rows)
        msg = f"{case} on {kind}"
        np.testing.assert_allclose(value, want["value"], rtol=1e-5, err_msg=msg)
        np.testing.assert_allclose(value, numpy_regularizer(case, rows), rtol=1e-5, err_msg=msg + " (numpy)")
        np.testing.assert_allclose(grad, want["grad_x"], rtol=1e-5, atol=1e-6, err_msg=msg + " (grad)")
        checked += 1
    assert checked >= at_least_on_this_backend({"sparse_centers": 1, "sparse_centers_3x3": 2}.get(case, 5)), case


def build(case):
    name, kwargs, _ = COMBINED[case]
    loss = losses.get(name, **kwargs)
    if f"{case}__W" in FIXTURE:  # PML's W [D, C]; dmltf's proxies are its transpose
        loss.proxies.assign(FIXTURE[f"{case}__W"].T.astype("float32"))
    return loss


@pytest.mark.parametrize("case", sorted(COMBINED))
def test_loss_with_regularizer_matches_pml(case):
    for kind in on_this_backend(BATCH_KINDS):
        want = FIXTURE.recorded(case, kind)
        labels, x, _, _ = FIXTURE.batch(kind)
        loss = build(case)
        value, grad_x, _, grad_w = value_and_grads(loss, labels, x)
        msg = f"{case} on {kind}"
        np.testing.assert_allclose(value, want["value"], rtol=1e-5, err_msg=msg)
        np.testing.assert_allclose(grad_x, want["grad_x"], rtol=1e-5, atol=1e-6, err_msg=msg + " (grad x)")
        if "grad_W" in want:
            np.testing.assert_allclose(grad_w[0], want["grad_W"].T, rtol=1e-5, atol=1e-6, err_msg=msg + " (grad W)")
        parts = loss.parts(labels, x.astype("float32"))
        assert sorted(parts) == sorted(["main", COMBINED[case][2]])
        np.testing.assert_allclose(float(parts[COMBINED[case][2]]), want["reg"], rtol=1e-5, err_msg=msg)
        np.testing.assert_allclose(float(sum(parts.values())), value, rtol=1e-6, err_msg=msg)


def test_zero_weight_sample_is_dropped_from_the_embedding_regularizer():
    labels, x, _, _ = FIXTURE.batch("ragged")
    w = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1], "float32")
    kept = w == 1
    loss = losses.get("ntxent", embedding_regularizer="zero_mean", embedding_reg_weight=0.5)
    reg = loss.parts(labels, x.astype("float32"), sample_weight=w)["embedding_reg"]
    np.testing.assert_allclose(float(reg), 0.5 * numpy_regularizer("zero_mean", x[kept]), rtol=1e-5)
    value, grad_x, _, _ = value_and_grads(loss, labels, x, sample_weight=w)
    want, want_grad, _, _ = value_and_grads(loss, labels[kept], x[kept])
    np.testing.assert_allclose(value, want, rtol=1e-5)
    assert np.all(grad_x[~kept] == 0.0)
    np.testing.assert_allclose(grad_x[kept], want_grad, rtol=1e-5, atol=1e-6)
    zero, grad_zero, _, _ = value_and_grads(loss, labels, x, sample_weight=np.zeros(9, "float32"))
    assert zero == 0.0 and np.all(grad_zero == 0.0)


def test_all_zero_sample_weights_drop_the_weight_regularizer():
    labels, x, _, _ = FIXTURE.batch("balanced")
    loss = build("large_margin_softmax_regular_face")
    parts = loss.parts(labels, x.astype("float32"), sample_weight=np.zeros(9, "float32"))
    assert float(parts["weight_reg"]) == 0.0 and float(parts["main"]) == 0.0


def test_metric_learner_logs_each_part():
    model = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=4)
    loss = losses.get("proxy_anchor", num_classes=2, embedding_dim=4, embedding_regularizer="lp",
                      embedding_reg_weight=0.1, weight_regularizer="center_invariant")
    batch = (np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32"), np.array([0, 0, 1, 1]))
    out = MetricLearner(model, loss).compute_losses(batch)
    assert sorted(out) == ["loss", "loss/embedding_reg", "loss/main", "loss/weight_reg"]
    total = sum(float(out[k]) for k in out if k != "loss")
    assert float(out["loss"]) == pytest.approx(total, rel=1e-6) and float(out["loss/embedding_reg"]) > 0
    plain = MetricLearner(model, losses.get("contrastive")).compute_losses(batch)
    assert sorted(plain) == ["loss"]


def test_config_round_trip():
    loss = losses.get("large_margin_softmax", num_classes=C, embedding_dim=D, embedding_regularizer="lp:p=1,power=2",
                      embedding_reg_weight=0.3, weight_regularizer="sparse_centers:num_classes=1,centers_per_class=5",
                      weight_reg_weight=2.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert again.get_config() == loss.get_config()
    assert repr(again.embedding_regularizer) == "lp:p=1.0,power=2.0" and again.weight_reg_weight == 2.0
    again.proxies.assign(loss.proxies)
    labels, x, _, _ = FIXTURE.batch("ragged")
    x = x.astype("float32")
    assert float(again(labels, x)) == pytest.approx(float(loss(labels, x)), rel=1e-6)


def test_bad_regularizers_are_refused():
    with pytest.raises(ValueError, match="no class weights or proxies"):
        losses.get("contrastive", weight_regularizer="regular_face")
    with pytest.raises(ValueError, match="couples the rows"):
        losses.get("contrastive", embedding_regularizer="center_invariant")
    with pytest.raises(ValueError, match="parts of its own"):
        losses.get("multiple_losses", embedding_regularizer="lp")
    with pytest.raises(ValueError, match="Unknown regularizer 'l2'"):
        regularizers.get("l2")
    with pytest.raises(ValueError, match="is not key=value"):
        regularizers.get("lp:p")
    with pytest.raises(ValueError, match="10 rows, expected"):
        regularizers.get("sparse_centers:num_classes=3,centers_per_class=2")(FIXTURE["input__weights__x"])


def test_flags_reach_the_main_loss():
    cfg = config.make(loss="normalized_softmax", embedding_regularizer="lp:power=2", embedding_reg_weight=0.5,
                      weight_regularizer="regular_face", weight_reg_weight=3.0)
    loss = builders.build_loss(cfg, None, num_classes=4, embedding_dim=6)
    assert repr(loss.embedding_regularizer) == "lp:p=2.0,power=2.0" and loss.embedding_reg_weight == 0.5
    assert repr(loss.weight_regularizer) == "regular_face" and loss.weight_reg_weight == 3.0
    plain = builders.build_loss(config.make(loss="normalized_softmax"), None, num_classes=4, embedding_dim=6)
    assert plain.embedding_regularizer is None and plain.weight_regularizer is None


def test_flags_refuse_a_weight_regularizer_without_weights_and_bad_specs():
    cfg = config.make(loss="contrastive", weight_regularizer="regular_face")
    with pytest.raises(ValueError, match=r"^--weight_regularizer=regular_face does not apply to --loss=contrastive"):
        builders.build_loss(cfg, None, num_classes=4, embedding_dim=6)
    cfg = config.make(loss="contrastive", embedding_regularizer="lp:q=3")
    with pytest.raises(ValueError, match=r"^--embedding_regularizer=lp:q=3: "):
        builders.build_loss(cfg, None, num_classes=4, embedding_dim=6)
