"""Losses ported from pytorch-metric-learning 2.9 against values recorded once from PML itself.

``tests/fixtures/pml/record_pml_losses.py`` (run with torch + PML, never by the suite) wrote
``pml_losses.npz``: float64 inputs of four batch kinds (balanced P x K, ragged labels with
singletons, one class, all labels distinct) plus separate references, and PML's loss value
and gradients with respect to the embeddings and the references, in float64. dmltf computes in
float32, so values and gradients are compared at rtol 1e-5 (atol 1e-6 on the gradients, whose
entries range over several orders of magnitude).

Where PML's value is NaN (NCA on a batch without a positive pair: the mean of no terms),
dmltf gives exactly 0 with a zero gradient, its contract for a batch without a valid term.
PML's LpDistance / SNRDistance cases were recorded with ``normalize_embeddings=False``:
dmltf's distances take the embeddings as given (the recording script says so).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf import losses
from dmltf.losses.self_supervised import SelfSupervisedLoss
from recorded_losses import Recording, at_least_on_this_backend, on_this_backend, value_and_grads

pytestmark = pytest.mark.backend_neutral

FIXTURE = Recording("pml", "pml_losses.npz")
batch, recorded = FIXTURE.batch, FIXTURE.recorded
BATCH_KINDS = ("balanced", "ragged", "one_class", "distinct", "refs")

# fixture case -> (dmltf loss name, constructor kwargs)
CASES = {
    "ntxent": ("ntxent", {}),
    "ntxent_t05_euclidean": ("ntxent", {"temperature": 0.5, "distance": "euclidean"}),
    "supcon": ("supcon", {}),
    "supcon_t05_euclidean": ("supcon", {"temperature": 0.5, "distance": "euclidean"}),
    "snr_contrastive": ("snr_contrastive", {}),
    "snr_contrastive_margins": ("snr_contrastive", {"pos_margin": 0.2, "neg_margin": 1.5}),
    "tuplet_margin": ("tuplet_margin", {}),
    "tuplet_margin_small": ("tuplet_margin", {"margin": 10.0, "scale": 16.0}),
    "intra_pair_variance": ("intra_pair_variance", {}),
    "intra_pair_variance_euclidean": ("intra_pair_variance", {"pos_eps": 0.05, "neg_eps": 0.1,
                                                              "distance": "euclidean"}),
    "ntxent_batch_hard": ("ntxent", {"miner": "batch_hard"}),
    "supcon_batch_hard": ("supcon", {"miner": "batch_hard"}),
    "tuplet_margin_batch_hard": ("tuplet_margin", {"miner": "batch_hard", "scale": 16.0}),
    "intra_pair_variance_batch_hard": ("intra_pair_variance", {"miner": "batch_hard"}),
    "nca": ("nca", {}),
    "nca_cosine_scale": ("nca", {"softmax_scale": 4.0, "distance": "cosine"}),
    "fast_ap": ("fast_ap", {}),
    "fast_ap_bins": ("fast_ap", {"num_bins": 5}),
    "multiple_losses": ("multiple_losses", {"losses": ("ntxent", "supcon", {"class_name": "dmltf>tuplet_margin",
                                                                            "config": {"scale": 16.0}}),
                                            "weights": (1.0, 0.5, 0.25)}),
}
SELF_SUPERVISED = {  # fixture case -> SelfSupervisedLoss kwargs; PML labels each row by its index
    "self_supervised_ntxent": {"loss": "ntxent"},
    "self_supervised_ntxent_asymmetric": {"loss": "ntxent", "symmetric": False},
    "self_supervised_supcon_asymmetric": {"loss": {"class_name": "dmltf>supcon", "config": {"temperature": 0.5}},
                                          "symmetric": False},
}


def test_fixture_was_recorded_from_pml_2_9():
    assert str(FIXTURE["pml_version"]) == "2.9.0"
    recorded_cases = {key.split("__")[0] for key in FIXTURE.files if "__" in key} - {"input"}
    assert {*CASES, *SELF_SUPERVISED} == recorded_cases


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_and_gradients_match_pml(case):
    name, kwargs = CASES[case]
    checked = 0
    for kind in on_this_backend(BATCH_KINDS):
        want = recorded(case, kind)
        if not want:  # PML refuses this batch (references not supported)
            continue
        labels, x, ref_labels, refs = batch(kind)
        value, grad_x, grad_refs, _ = value_and_grads(losses.get(name, **kwargs), labels, x, ref_labels, refs)
        msg = f"{case} on the {kind} batch"
        if "nan" in want:  # PML: mean of no terms; dmltf: 0 and a zero gradient
            assert value == 0.0 and np.all(grad_x == 0.0), msg
            continue
        np.testing.assert_allclose(value, want["value"], rtol=1e-5, atol=1e-7, err_msg=msg)
        np.testing.assert_allclose(grad_x, want["grad_x"], rtol=1e-5, atol=1e-6, err_msg=msg + " (grad x)")
        if refs is not None:
            np.testing.assert_allclose(grad_refs, want["grad_refs"], rtol=1e-5, atol=1e-6, err_msg=msg + " (grad refs)")
        checked += 1
    assert checked >= at_least_on_this_backend(3), case


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_round_trip(case):
    name, kwargs = CASES[case]
    loss = losses.get(name, **kwargs)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    labels, x, _, _ = batch("ragged")
    x = x.astype("float32")
    assert float(again(labels, x)) == pytest.approx(float(loss(labels, x)), rel=1e-6)


# Their negative-pair part needs no positive pair (in PML too): only a lone sample has no term.
NEGATIVE_PART = {"intra_pair_variance", "snr_contrastive"}


@pytest.mark.parametrize("name", sorted({name for name, _ in CASES.values()}))
def test_no_pair_gives_zero_and_zero_gradient(name):
    batches = [(np.array([3]), np.ones((1, 6)))]
    if name not in NEGATIVE_PART:  # no positive pair
        batches.append((np.arange(4), FIXTURE["input__distinct__x"][:4]))
    for labels, x in batches:
        value, grad_x, _, _ = value_and_grads(losses.get(name), labels, x)
        assert value == 0.0 and np.all(grad_x == 0.0), name


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", sorted({name for name, _ in CASES.values()}))
def test_finite_under_mixed_precision_and_in_tf_function(name):
    labels = np.repeat(np.arange(4), 3)
    x16 = tf.constant(np.random.default_rng(1).normal(size=(12, 8)), tf.float16)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        loss = losses.get(name)
        step = tf.function(lambda x: loss(labels, x))
        with tf.GradientTape() as tape:
            tape.watch(x16)
            value = step(x16)
        grad = tape.gradient(value, x16)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert value.dtype == tf.float32 and np.isfinite(float(value)) and np.all(np.isfinite(grad.numpy())), name


@pytest.mark.parametrize("case", sorted(SELF_SUPERVISED))
def test_self_supervised_matches_pml(case):
    x, view2 = FIXTURE["input__views__x"], FIXTURE["input__views__view2"]
    want = recorded(case, "views")
    value, grad_x, grad_view2, _ = value_and_grads(SelfSupervisedLoss(**SELF_SUPERVISED[case]), None, x, None, view2)
    np.testing.assert_allclose(value, want["value"], rtol=1e-5, atol=1e-7, err_msg=case)
    np.testing.assert_allclose(grad_x, want["grad_x"], rtol=1e-5, atol=1e-6, err_msg=case)
    np.testing.assert_allclose(grad_view2, want["grad_refs"], rtol=1e-5, atol=1e-6, err_msg=case)


@pytest.mark.parametrize("symmetric", [True, False])
def test_self_supervised_sample_weight_contract(symmetric):
    """0/1 weights give the loss of the kept rows (both views), all-zero weights exactly 0, a
    zero-weight row exactly zero gradient (the contract of tests/test_sample_weight.py)."""
    x, view2 = FIXTURE["input__views__x"], FIXTURE["input__views__view2"]
    loss = SelfSupervisedLoss("ntxent", symmetric=symmetric)
    w = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1], "float32")
    kept = w == 1
    value, grad_x, grad_view2, _ = value_and_grads(loss, None, x, None, view2, sample_weight=w)
    want, want_x, want_view2, _ = value_and_grads(loss, None, x[kept], None, view2[kept])
    np.testing.assert_allclose(value, want, rtol=1e-5)  # float32: the masked sums round differently
    np.testing.assert_allclose(grad_x[kept], want_x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_view2[kept], want_view2, rtol=1e-5, atol=1e-7)
    assert np.all(grad_x[~kept] == 0.0) and np.all(grad_view2[~kept] == 0.0)
    zero = value_and_grads(loss, None, x, None, view2, sample_weight=np.zeros(9, "float32"))
    assert zero[0] == 0.0 and np.all(zero[1] == 0.0) and np.all(zero[2] == 0.0)


@pytest.mark.tensorflow_only
def test_self_supervised_round_trip_in_tf_function_and_needs_two_views():
    x, view2 = FIXTURE["input__views__x"].astype("float32"), FIXTURE["input__views__view2"].astype("float32")
    loss = SelfSupervisedLoss(**SELF_SUPERVISED["self_supervised_supcon_asymmetric"])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(again) is SelfSupervisedLoss and again.get_config() == loss.get_config()
    w = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1], "float32")
    traced = tf.function(lambda a, b, sw: again(None, a, ref_embeddings=b, sample_weight=sw))
    assert float(traced(x, view2, w)) == pytest.approx(float(loss(None, x, ref_embeddings=view2, sample_weight=w)))
    with pytest.raises(ValueError, match="second view"):
        loss(None, x)
    assert "self_supervised" not in losses.names()


def test_multiple_losses_parts_and_lr_multiplier():
    labels, x, _, _ = batch("ragged")
    x = x.astype("float32")
    name, kwargs = CASES["multiple_losses"]
    combined = losses.get(name, **kwargs)
    parts = combined.parts(labels, x)
    assert list(parts) == ["ntxent", "supcon", "tuplet_margin"]
    assert float(parts["supcon"]) == pytest.approx(0.5 * float(losses.get("supcon")(labels, x)), rel=1e-6)
    assert float(combined(labels, x)) == pytest.approx(sum(float(v) for v in parts.values()), rel=1e-6)
    assert list(losses.get("multiple_losses", losses=("ntxent", "ntxent")).parts(labels, x)) == ["ntxent", "ntxent_2"]
    with_proxies = losses.get("multiple_losses", losses=("ntxent", "proxy_anchor"), num_classes=5, embedding_dim=6)
    assert with_proxies.lr_multiplier == losses.get_class("proxy_anchor").lr_multiplier
    assert len(with_proxies.trainable_weights) == 1
    with pytest.raises(ValueError, match="lr_multiplier"):
        losses.get("multiple_losses", losses=("proxy_anchor", "proxy_nca_pp"), num_classes=5, embedding_dim=6)
    with pytest.raises(ValueError, match="weights"):
        losses.get("multiple_losses", losses=("ntxent",), weights=(1.0, 2.0))


# ---------------------------------------------------------------- fractional sample weights
def cosines(x):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit @ unit.T


def ref_ntxent(labels, x, w, temperature=0.07):
    """Per positive pair (i, p), weight w_i w_p: -log(e^l_ip / (e^l_ip + sum_n w_n e^l_in))."""
    logits, total, count = cosines(x) / temperature, 0.0, 0.0
    for i in range(len(x)):
        for p in range(len(x)):
            if p != i and labels[p] == labels[i] and w[i] > 0 and w[p] > 0:
                negatives = sum(w[n] * np.exp(logits[i, n]) for n in range(len(x)) if labels[n] != labels[i])
                total += w[i] * w[p] * -np.log(np.exp(logits[i, p]) / (np.exp(logits[i, p]) + negatives))
                count += w[i] * w[p]
    return total / count


def ref_supcon(labels, x, w, temperature=0.1):
    """Per anchor i (weight w_i): -sum_p w_p log(e^l_ip / sum_{a != i} w_a e^l_ia) / sum_p w_p; the mean
    over the anchors with a non-zero term."""
    logits, total, count = cosines(x) / temperature, 0.0, 0.0
    for i in range(len(x)):
        positives = [p for p in range(len(x)) if p != i and labels[p] == labels[i] and w[p] > 0]
        if w[i] == 0 or not positives:
            continue
        log_den = np.log(sum(w[a] * np.exp(logits[i, a]) for a in range(len(x)) if a != i))
        term = -sum(w[p] * (logits[i, p] - log_den) for p in positives) / sum(w[p] for p in positives)
        total, count = total + w[i] * term, count + w[i] * (term > 0)
    return total / count


@pytest.mark.parametrize("name, reference", [("ntxent", ref_ntxent), ("supcon", ref_supcon)])
def test_fractional_weights_match_numpy_reference(name, reference):
    w = np.array([0.5, 1.0, 0.0, 2.0, 0.3, 1.5, 0.0, 0.8, 1.2])
    for kind in ("balanced", "ragged"):
        labels, x, _, _ = batch(kind)
        value, grad, _, _ = value_and_grads(losses.get(name), labels, x, sample_weight=w.astype("float32"))
        np.testing.assert_allclose(value, reference(labels, x, w), rtol=1e-5, err_msg=f"{name} on {kind}")
        eps, numeric = 1e-6, np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            up, down = x.copy(), x.copy()
            up[idx] += eps
            down[idx] -= eps
            numeric[idx] = (reference(labels, up, w) - reference(labels, down, w)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-5, err_msg=f"{name} gradient on {kind}")


def test_metric_learner_logs_each_part_of_multiple_losses():
    from dmltf.methods import MetricLearner
    from dmltf.models import build_embedding_model

    keras.utils.set_random_seed(0)
    model = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=4)
    loss = losses.get("multiple_losses", losses=("contrastive", "ntxent"), weights=(1.0, 0.5))
    images = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2])
    out = MetricLearner(model, loss).compute_losses((images, labels), training=False)
    assert sorted(out) == ["loss", "loss/contrastive", "loss/ntxent"]
    assert float(out["loss/ntxent"]) > 0
    assert float(out["loss"]) == pytest.approx(float(out["loss/contrastive"]) + float(out["loss/ntxent"]), rel=1e-6)
    assert float(out["loss"]) == pytest.approx(float(loss(labels, model(images, training=False))), rel=1e-5)
