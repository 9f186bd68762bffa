"""Proxy and classification losses against independent float64 numpy references.

Budget: < 90 s. Every reference below is written from the formulas in METHODS.md and the official
code, with explicit loops, and shares nothing with the library's code path.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf import losses
from dmltf.losses import initializers
from recorded_losses import central_differences, compiled, on_this_backend, value_and_gradients

C, D, K = 5, 6, 3  # classes, embedding dim, SoftTriple centres per class

BATCHES = {
    "balanced": [0, 0, 1, 1, 2, 2, 3, 3],  # class 4 absent
    "ragged": [0, 0, 0, 1, 1, 2, 4],  # singletons 2 and 4, class 3 absent
    "one_class": [3, 3, 3, 3],
    "all_distinct": [4, 2, 0, 1, 3],
}


# ----------------------------------------------------------------------------- numpy references
def unit(a, axis=-1):
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


def cross_entropy(logits, y, exclude_positive=False):
    """Per row: log sum_{denominator} exp(logit) - logit_y."""
    out = []
    for row, t in zip(logits, y):
        den = [row[c] for c in range(len(row)) if not (exclude_positive and c == t)]
        out.append(math.log(sum(math.exp(v) for v in den)) - row[t])
    return np.array(out)


def ref_softmax(y, x, w, use_bias=True):
    logits = x @ w["proxies"].T + (w["bias"] if use_bias else 0.0)
    return cross_entropy(logits, y).mean()


def ref_normalized_softmax(y, x, w, temperature=0.05):
    return cross_entropy(unit(x) @ unit(w["proxies"]).T / temperature, y).mean()


def ref_cosface(y, x, w, scale=64.0, margin=0.35):
    cos = unit(x) @ unit(w["proxies"]).T
    logits = np.array([[scale * (cos[i, c] - (margin if c == t else 0.0)) for c in range(C)] for i, t in enumerate(y)])
    return cross_entropy(logits, y).mean()


def ref_arcface(y, x, w, scale=64.0, margin=0.5, easy_margin=False):
    cos = unit(x) @ unit(w["proxies"]).T
    logits = scale * cos.copy()
    for i, t in enumerate(y):
        c = cos[i, t]
        phi = c * math.cos(margin) - math.sqrt(1.0 - c * c + 1e-6) * math.sin(margin)
        if easy_margin:
            phi = phi if c > 0 else c
        else:
            phi = phi if c > math.cos(math.pi - margin) else c - math.sin(math.pi - margin) * margin
        logits[i, t] = scale * phi
    return cross_entropy(logits, y).mean()


def sq_dist(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def ref_proxy_nca(y, x, w, embedding_scale=1.0, proxy_scale=3.0, exclude_positive=True, hinge=False):
    dist = sq_dist(embedding_scale * unit(x), proxy_scale * unit(w["proxies"]))
    losses_ = []
    for i, t in enumerate(y):
        num = math.exp(-dist[i, t])
        den = sum(math.exp(-dist[i, c]) for c in range(C) if not (exclude_positive and c == t))
        losses_.append(-math.log(num / den))
    losses_ = np.array(losses_)
    return (np.maximum(losses_, 0.0) if hinge else losses_).mean()


def ref_proxy_nca_pp(y, x, w, temperature=1.0 / 9.0):
    s = math.sqrt(1.0 / temperature)
    return cross_entropy(-sq_dist(s * unit(x), s * unit(w["proxies"])), y).mean()


def ref_proxy_anchor(y, x, w, alpha=32.0, margin=0.1, variant="official"):
    cos = unit(x) @ unit(w["proxies"]).T
    y = np.asarray(y)
    pos_terms, neg_terms = [], []
    for p in range(C):
        pos = [cos[i, p] for i in range(len(y)) if y[i] == p]
        neg = [cos[i, p] for i in range(len(y)) if y[i] != p]
        if variant == "official":
            if pos:
                pos_terms.append(math.log(1.0 + sum(math.exp(-alpha * (s - margin)) for s in pos)))
            neg_terms.append(math.log(1.0 + sum(math.exp(alpha * (s + margin)) for s in neg)))
        else:  # dml-tf: plain log-sum-exp, 0 for an empty set
            pos_terms.append(math.log(sum(math.exp(alpha * (s - margin)) for s in pos)) if pos else 0.0)
            neg_terms.append(math.log(sum(math.exp(alpha * (s + margin)) for s in neg)) if neg else 0.0)
    if variant == "official":
        return np.mean(pos_terms) + np.mean(neg_terms)
    return np.mean(neg_terms) - np.sum(pos_terms) / len(y)


def ref_orthogonality(p):
    n = len(p)
    norms = sum((1.0 - p[c] @ p[c]) ** 2 for c in range(n)) / n
    pairs = sum((p[a] @ p[b]) ** 2 for a in range(n) for b in range(a + 1, n))
    return norms + pairs / (2.0 * (n - 1))


def ref_proxy_anchor_ortho(y, x, w, ortho_weight=0.1):
    return ref_proxy_anchor(y, x, w) + ortho_weight * ref_orthogonality(w["proxies"])


def ref_soft_triple(y, x, w, centers_per_class=K, la=20.0, gamma=0.1, margin=0.01, tau=0.2):
    centers = unit(w["centers"], axis=0)  # [D, C*K], column c*K + k
    xn = unit(x)
    logits = np.zeros((len(y), C))
    for i, t in enumerate(y):
        for c in range(C):
            s = np.array([xn[i] @ centers[:, c * centers_per_class + k] for k in range(centers_per_class)])
            prob = np.exp(s / gamma) / np.exp(s / gamma).sum()
            logits[i, c] = la * ((prob * s).sum() - (margin if c == t else 0.0))
    reg = 0.0
    for c in range(C):
        for k in range(centers_per_class):
            for k2 in range(k + 1, centers_per_class):
                a, b = centers[:, c * centers_per_class + k], centers[:, c * centers_per_class + k2]
                reg += math.sqrt(2.0 + 1e-5 - 2.0 * a @ b)
    reg /= C * centers_per_class * (centers_per_class - 1)
    return cross_entropy(logits, y).mean() + tau * reg


CASES = [
    ("softmax", {}, ref_softmax),
    ("softmax", {"use_bias": False}, ref_softmax),
    ("normalized_softmax", {}, ref_normalized_softmax),
    ("cosface", {}, ref_cosface),
    ("arcface", {}, ref_arcface),
    ("arcface", {"scale": 80.0, "margin": 0.15, "easy_margin": True}, ref_arcface),
    ("proxy_nca", {}, ref_proxy_nca),
    ("proxy_nca", {"proxy_scale": 8.0, "hinge": True}, ref_proxy_nca),
    ("proxy_nca", {"exclude_positive": False}, ref_proxy_nca),
    ("proxy_nca_pp", {}, ref_proxy_nca_pp),
    ("proxy_anchor", {}, ref_proxy_anchor),
    ("proxy_anchor", {"variant": "dml_tf"}, ref_proxy_anchor),
    ("proxy_anchor", {"ortho_weight": 0.1}, ref_proxy_anchor_ortho),
    ("soft_triple", {"centers_per_class": K}, ref_soft_triple),
]


def case_id(case):
    name, kwargs, _ = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


# ----------------------------------------------------------------------------- helpers
def build(name, kwargs, seed):
    """A loss with given (seeded) weight values; returns it, the values and the embeddings' rng."""
    loss = losses.get(name, num_classes=C, embedding_dim=D, **kwargs)
    rng = np.random.default_rng(seed)
    values = {v.name: rng.normal(size=tuple(v.shape)) for v in loss.weights}
    for v in loss.weights:
        v.assign(values[v.name].astype("float32"))
    return loss, values, rng


def loss_value_and_grads(loss, labels, x):
    """(value, [gradient for x, then for each of loss.weights]) on the backend in use."""
    value, (grad_x,), grad_w = value_and_gradients(lambda x: loss(np.asarray(labels), x), [x], loss.weights)
    return value, [grad_x, *grad_w]


def assert_grad_close(actual, expected):
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=2e-3, atol=2e-4 * scale)


# ----------------------------------------------------------------------------- value and gradients
@pytest.mark.parametrize("batch", on_this_backend(BATCHES))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_value_and_gradients_match_numpy(case, batch):
    name, kwargs, reference = case
    labels = BATCHES[batch]
    loss, values, rng = build(name, kwargs, seed=len(labels))
    x = rng.normal(size=(len(labels), D))

    def f(x_, w_):
        return reference(labels, x_, w_, **kwargs)

    value, grads = loss_value_and_grads(loss, labels, x.astype("float32"))
    expected = f(x, values)
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-4)

    assert_grad_close(grads[0], central_differences(lambda a: f(a, values), x))
    for v, g in zip(loss.weights, grads[1:]):
        fd = central_differences(lambda a, n=v.name: f(x, {**values, n: a}), values[v.name])
        assert_grad_close(g, fd)


@pytest.mark.parametrize("scale", [64.0, 2.0])  # at scale 2 the target at cos = 1 still moves the loss
def test_arcface_both_branches_of_the_margin(scale):
    """Target cosines on both sides of cos(pi - m), and at |cos| = 1 (the 1e-6 keeps sin's gradient finite)."""
    loss, values, _ = build("arcface", {"scale": scale}, seed=0)
    p = values["proxies"]
    labels = [0, 1, 2, 3]
    x = np.stack([-p[0], p[1], -p[2] + 0.3 * p[3], unit(p[3]) * 0.2 - unit(p[0])])
    cos = unit(x) @ unit(p).T
    assert (cos[[0, 1, 2, 3], labels] <= math.cos(math.pi - 0.5)).sum() >= 2  # the linear branch is exercised
    value, grads = loss_value_and_grads(loss, labels, x.astype("float32"))
    np.testing.assert_allclose(value, ref_arcface(labels, x, values, scale=scale), rtol=1e-5)
    assert all(np.isfinite(g).all() for g in grads)


def test_soft_triple_regularizer_alone():
    """The centre regulariser is small (sqrt(1e-5) terms matter), so check it on its own, tightly."""
    loss, values, _ = build("soft_triple", {"centers_per_class": K}, seed=2)
    labels, x = [0], np.ones((1, D))
    no_reg = ref_soft_triple(labels, x, values, tau=0.0)
    expected = (ref_soft_triple(labels, x, values) - no_reg) / 0.2
    np.testing.assert_allclose(float(loss.regularization()) / 0.2, expected, rtol=1e-5)


def test_proxy_nca_reproduces_dml_tf_head_form():
    """dml-tf HEAD: logits s*cos, positive excluded; equals scales with 2*sx*sp = s."""
    loss, values, rng = build("proxy_nca", {"embedding_scale": 1.0, "proxy_scale": 16.0}, seed=3)
    labels = BATCHES["ragged"]
    x = rng.normal(size=(len(labels), D))
    logits = 32.0 * unit(x) @ unit(values["proxies"]).T
    expected = np.mean([math.log(sum(math.exp(logits[i, c] - logits[i].max()) for c in range(C) if c != t))
                        - (logits[i, t] - logits[i].max()) for i, t in enumerate(labels)])
    np.testing.assert_allclose(float(loss(np.array(labels), x.astype("float32"))), expected, rtol=1e-4)


# ----------------------------------------------------------------------------- mixed precision
@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_mixed_precision_is_finite(case, policy):
    name, kwargs, _ = case
    loss, _, rng = build(name, kwargs, seed=1)
    assert all(v.dtype == "float32" for v in loss.weights)
    labels = BATCHES["ragged"]
    # Large embeddings: their squared norm overflows float16 unless the loss casts first.
    x = tf.constant(rng.normal(size=(len(labels), D)) * 200.0, dtype=policy.split("_")[1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(np.asarray(labels), x)
    grads = tape.gradient(value, [x] + list(loss.weights))
    assert value.dtype == tf.float32 and np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(tf.cast(g, tf.float32))).all() for g in grads)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", sorted({c[0] for c in CASES}))
@pytest.mark.parametrize("bad", [C, -1])
def test_label_out_of_range_is_a_clear_error(name, bad):
    """Eagerly and inside a compiled function (tf.function, jax.jit), the message names the problem."""
    loss = losses.get(name, num_classes=C, embedding_dim=D)
    x = np.ones((2, D), "float32")
    message = "num_classes=5 given to a proxy loss" if bad == C else "below 0 given to a proxy loss"
    if keras.backend.backend() == "tensorflow":
        eager_error = compiled_error = tf.errors.InvalidArgumentError
    else:  # JAX: a ValueError eagerly, re-raised by the compiled function as JAX's runtime error
        eager_error, compiled_error = ValueError, Exception
    with pytest.raises(eager_error, match=message):
        loss(np.array([0, bad]), x)
    with pytest.raises(compiled_error, match=message):
        compiled(lambda y, e: loss(y, e))(np.array([0, bad]), x)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="official, dml_tf"):
        losses.get("proxy_anchor", num_classes=C, embedding_dim=D, variant="gedml")
    with pytest.raises(ValueError, match="num_classes >= 2"):
        losses.get("proxy_nca", num_classes=1, embedding_dim=D)
    with pytest.raises(ValueError, match="normal_div8"):
        losses.get("proxy_nca", num_classes=C, embedding_dim=D, initializer="he")


# ----------------------------------------------------------------------------- defaults, initialisers
def test_reference_defaults():
    expected = {
        "softmax": 1.0, "normalized_softmax": 1.0, "arcface": 1.0, "cosface": 1.0, "proxy_nca": 1.0,
        "proxy_nca_pp": 1e5, "proxy_anchor": 100.0, "soft_triple": 100.0,
    }
    for name, multiplier in expected.items():
        loss = losses.get(name, num_classes=C, embedding_dim=D)
        assert loss.lr_multiplier == multiplier, name
    assert losses.get("proxy_anchor", num_classes=C, embedding_dim=D, lr_multiplier=3).lr_multiplier == 3.0
    st = losses.get("soft_triple", num_classes=C, embedding_dim=D)
    assert tuple(st.centers.shape) == (D, C * 10) and not hasattr(st, "proxies")
    # Flags are generated from constructor signatures: every default must be a plain value.
    import inspect

    for name in expected:
        for param in list(inspect.signature(losses.get_class(name).__init__).parameters.values())[3:]:
            if param.kind is param.POSITIONAL_OR_KEYWORD:
                assert isinstance(param.default, (bool, int, float, str)), (name, param.name)


def test_named_initializers_follow_torch_conventions():
    rows, cols = 300, 400
    def sample(name):
        return np.asarray(initializers.get(name)((rows, cols)))
    assert abs(sample("kaiming_normal").std() - math.sqrt(2.0 / rows)) < 0.05 * math.sqrt(2.0 / rows)  # fan_out
    bound = 1.0 / math.sqrt(cols)  # kaiming_uniform(a=sqrt 5): 1/sqrt(fan_in), fan_in = shape[1]
    u = sample("kaiming_uniform")
    assert u.max() <= bound and u.max() > 0.99 * bound
    assert abs(sample("normal_div8").std() - 0.125) < 0.005
    assert abs(sample("normal").std() - 1.0) < 0.02
    g = sample("xavier_uniform")
    assert g.max() <= math.sqrt(6.0 / (rows + cols)) and g.max() > 0.99 * math.sqrt(6.0 / (rows + cols))
    o = np.asarray(initializers.get("orthogonal")((8, 16)))
    np.testing.assert_allclose(o @ o.T, np.eye(8), atol=1e-5)
    # Through the losses' initializer= parameter, and SoftTriple's fan_in = C*K as the official code.
    p = np.asarray(losses.get("proxy_nca", num_classes=8, embedding_dim=16, initializer="orthogonal").proxies)
    np.testing.assert_allclose(p @ p.T, np.eye(8), atol=1e-5)
    centers = np.asarray(losses.get("soft_triple", num_classes=40, embedding_dim=64).centers)
    assert np.abs(centers).max() <= 1.0 / math.sqrt(400) and np.abs(centers).max() > 0.95 / math.sqrt(400)


# ----------------------------------------------------------------------------- serialization
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_get_config_round_trip(case):
    name, kwargs, _ = case
    loss = losses.get(name, num_classes=C, embedding_dim=D, lr_multiplier=7.0, **kwargs)
    clone = losses.get(keras.saving.serialize_keras_object(loss))
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config() and clone.lr_multiplier == 7.0
    assert [tuple(v.shape) for v in clone.weights] == [tuple(v.shape) for v in loss.weights]


@keras.saving.register_keras_serializable(package="dmltf_tests")
class LossHolder(keras.Model):
    """A model whose only state is a loss, to check the weights survive .keras saving."""

    def __init__(self, loss_config, **kwargs):
        super().__init__(**kwargs)
        self.loss_config = loss_config
        self.metric_loss = losses.get(loss_config)

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {**super().get_config(), "loss_config": self.loss_config}

    @classmethod
    def from_config(cls, config):
        config["loss_config"] = keras.saving.deserialize_keras_object(config["loss_config"])
        return cls(**config)


@pytest.mark.parametrize("name", sorted({c[0] for c in CASES}))
def test_weights_survive_keras_saving(name, tmp_path):
    loss, values, _ = build(name, {"centers_per_class": K} if name == "soft_triple" else {}, seed=5)
    model = LossHolder(keras.saving.serialize_keras_object(loss))
    for v in model.metric_loss.weights:
        v.assign(values[v.name].astype("float32"))
    model(np.zeros((1, D), "float32"))
    path = str(tmp_path / "holder.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    for v in restored.metric_loss.weights:
        np.testing.assert_allclose(np.asarray(v), values[v.name].astype("float32"))


# ----------------------------------------------------------------------------- optimizer groups
@pytest.mark.parametrize("name,multiplier", [("proxy_nca_pp", 1e5), ("soft_triple", 100.0), ("arcface", 1.0)])
def test_one_step_moves_proxies_at_the_loss_multiplier(name, multiplier):
    """Through the trainer's groups (plain SGD): the loss group steps lr * multiplier * grad,
    the backbone lr * grad, so the fitted step sizes differ by exactly the reference multiplier."""
    import config
    from dmltf.training import builders
    from dmltf.training.optim import GroupOptimizer

    keras.utils.set_random_seed(0)
    cfg = config.make(loss=name, backbone="small_cnn", embedding_dim=8, optimizer="sgd", momentum=0.0,
                      weight_decay=0.0, lr=1e-3, loss_soft_triple_centers_per_class=2)
    method = builders.build_method(cfg, builders.DatasetInfo(num_classes=4, input_shape=(8, 8, 1)))
    images = np.random.default_rng(0).uniform(size=(8, 8, 8, 1)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    method(images)
    groups = {g.name: GroupOptimizer(g, cfg) for g in method.optimizer_groups()}
    assert groups["loss"].base_lr == pytest.approx(1e-3 * multiplier)
    variables = {k: groups[k].group.variables for k in ("backbone", "loss")}
    before = {k: [np.asarray(v).copy() for v in vs] for k, vs in variables.items()}
    with tf.GradientTape() as tape:
        total = method.compute_losses((images, labels))["loss"]
    grads = dict(zip(variables, tape.gradient(total, list(variables.values()))))
    for k in variables:
        groups[k].apply(grads[k], groups[k].clips_at(0))

    def fitted_step(k):
        """The scalar s with delta = -s * grad (least squares over the group's elements)."""
        delta = np.concatenate([(np.asarray(v) - b).ravel() for v, b in zip(variables[k], before[k])])
        g = np.concatenate([np.asarray(x).ravel() for x in grads[k]])
        assert np.abs(g).max() > 0
        return -(delta @ g) / (g @ g)

    backbone_step, loss_step = fitted_step("backbone"), fitted_step("loss")
    assert backbone_step == pytest.approx(1e-3, rel=1e-3)
    assert loss_step / backbone_step == pytest.approx(multiplier, rel=1e-3)
