"""Mixed precision that pays: under ``--precision=mixed_float16 / mixed_bfloat16`` every layer with
weights that the backbone registry and the methods build computes in half precision with float32
variables (except the layers listed in ``FLOAT32_BY_DESIGN``), a real forward pass gives half
activations and float32 losses, and float16 (only) gets loss scaling, which one real trainer
step applies and unscales. Budget: ~15 s."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import config
from dmltf import losses, methods
from dmltf.layers import L2Normalize
from dmltf.methods import OptimizerGroup
from dmltf.methods.drml import RelationEmbedder
from dmltf.methods.lm_metric import FlowContext
from dmltf.models import backbones
from dmltf.models.glow import ConditionalGlow
from dmltf.training import builders
from dmltf.training.experiment import build_trainer
from dmltf.training.optim import GroupOptimizer

HALF = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
# Layers that stay float32 whatever the policy, with why (each instance and all its sublayers):
FLOAT32_BY_DESIGN = {
    losses.MetricLoss: "loss math and its weights (proxies, centers) run in float32 (DESIGN.md, Loss contract)",
    ConditionalGlow: "LM-Metric's flow: its log-determinants sum hundreds of terms (dmltf/models/glow.py)",
    FlowContext: "calls the float32 flow directly, so its own autocast scope must be float32 too",
    RelationEmbedder: "DRML's head: the 1e-12 floors of its L1 / L2 normalisations underflow half (0 / 0)",
    L2Normalize: "the embedding itself, read by losses, evaluation and exports",
}
# The smallest input each backbone builds at (Keras' InceptionV3 needs 75 px, BN-Inception's stage
# maps must concatenate); the rest build at 32 px.
SIZES = {"inception_v3": 75, "bn_inception": 64, "small_cnn": 16}
# bfloat16 goes through the same Keras policy code: the two fastest builds cover it.
BFLOAT16_BACKBONES = ("small_cnn", "googlenet")


@pytest.fixture
def policy(request):
    """Sets the global policy as ``--precision`` does (dmltf/training/experiment.py) and restores it."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(before)


def float32_by_design(model):
    """ids of the layers inside ``model`` that FLOAT32_BY_DESIGN keeps in float32."""
    kept = set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, tuple(FLOAT32_BY_DESIGN)):
            kept |= {id(sub) for sub in layer._flatten_layers(include_self=True, recursive=True)}
    return kept


def check_layers(model, half):
    """Every layer with weights computes in ``half`` with float32 variables, or is float32 by design."""
    kept = float32_by_design(model)
    checked = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.weights:
            continue
        variable_dtypes = {str(w.dtype) for w in layer.weights if w.dtype in ("float16", "bfloat16", "float32")}
        assert variable_dtypes <= {"float32"}, (layer.name, variable_dtypes)
        expected = "float32" if id(layer) in kept else half
        assert layer.compute_dtype == expected, (type(layer).__name__, layer.name, layer.compute_dtype)
        checked += id(layer) not in kept
    assert checked > 0
    return checked


CASES = [(name, p) for name in backbones.names() for p in HALF if p == "mixed_float16" or name in BFLOAT16_BACKBONES]


@pytest.mark.parametrize("policy,name", [(p, n) for n, p in CASES], indirect=["policy"], ids=str)
def test_every_backbone_computes_in_half_precision(policy, name):
    """Each layer with weights has a half compute dtype and float32 variables, and a forward pass
    gives half activations at every layer (the convolutions among them), finite."""
    size = SIZES.get(name, 32)
    model = backbones.build(name, (size, size, 3))
    assert check_layers(model, HALF[policy]) >= 3  # the convolutions, BatchNorms, ...
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    images = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype("float32")
    outputs = probe([images], training=False)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in layers) >= 3
    assert {keras.backend.standardize_dtype(out.dtype) for out in outputs} == {HALF[policy]}
    assert all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))).all() for out in outputs)


METHOD_FLAGS = {  # small settings each method accepts on 8x8 images
    "metric_learner": dict(loss="proxy_anchor"),
    "drml": dict(drml_branches=2),
    "dvml": dict(),
    "lm_metric": dict(loss="smooth_ap", lm_metric_flow_width=4, lm_metric_flow_channels=4, lm_metric_flow_levels=1,
                      lm_metric_flow_steps=1),
}


def test_every_method_is_covered():
    assert set(METHOD_FLAGS) == {m for m in methods.names() if not m.startswith("toy")}


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("name", sorted(METHOD_FLAGS))
def test_each_method_runs_in_half_precision_with_float32_losses(policy, name):
    cfg = config.make(method=name, backbone="small_cnn", embedding_dim=16, **METHOD_FLAGS[name])
    method = builders.build_method(cfg, builders.DatasetInfo(num_classes=3, input_shape=(8, 8, 1)))
    check_layers(method, HALF[policy])
    trunk = next(layer for layer in method._flatten_layers(recursive=True) if layer.name == "backbone")
    assert trunk.compute_dtype == HALF[policy]
    images = np.random.default_rng(1).random((6, 8, 8, 1)).astype("float32")
    values = method.compute_losses((images, np.array([0, 0, 0, 1, 1, 1])), training=True)
    for key, value in values.items():
        assert value.dtype == "float32", (key, value.dtype)
        assert np.isfinite(keras.ops.convert_to_numpy(value)).all(), key
    embedded = method.embed(images)
    if any(isinstance(layer, L2Normalize) for layer in method.embedding_model._flatten_layers(recursive=True)):
        assert embedded.dtype == "float32"  # the normalised embedding leaves the model in float32
    embeddings = keras.ops.convert_to_numpy(keras.ops.cast(embedded, "float32"))
    assert embeddings.shape == (6, 16) and np.isfinite(embeddings).all()


@pytest.mark.parametrize("precision,scaled", [("mixed_float16", True), ("mixed_bfloat16", False), ("float32", False)])
def test_only_float16_wraps_the_groups_in_loss_scaling(precision, scaled):
    group = GroupOptimizer(OptimizerGroup("g", [tf.Variable([1.0, 2.0])]), config.make(precision=precision))
    assert isinstance(group.optimizer, keras.optimizers.LossScaleOptimizer) == scaled


def test_float16_trainer_steps_unscale_the_gradient_and_keep_the_loss_scale_state(tmp_path):
    """SGD without momentum: a finite step moves each weight by -lr x the gradient of the float32
    loss (the loss scale divided out) and counts one finite step; a step whose scaled gradient
    overflows float16 changes no weight and halves the scale (Keras' dynamic loss scaling)."""
    lr = 0.05
    cfg = config.make(dataset="digits", backbone="small_cnn", embedding_dim=16, loss="proxy_anchor", classes_per_batch=4,
                      samples_per_class=2, epochs=2, max_steps_per_epoch=1, eval_every=0, progress="none",
                      export=False, logdir=str(tmp_path), tb_neighbours=0, tb_projector_points=0, optimizer="sgd",
                      momentum=0.0, weight_decay=0.0, lr=lr, freeze_bn=True, precision="mixed_float16")
    try:
        trainer = build_trainer(cfg)  # sets the policy as --precision does
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        from dmltf import data

        batch = next(iter(data.train_dataset(trainer.train_split, trainer.sampler, seed=0, epoch=0,
                                             preprocessing=trainer.preprocessing)))
        variables = [v for g in trainer.groups for v in g.group.variables]
        with tf.GradientTape() as tape:
            loss = trainer.method.compute_losses(batch)["loss"]
        assert loss.dtype == "float32"
        grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]

        def state():
            return [(float(g.optimizer.dynamic_scale.numpy()), int(g.optimizer.step_counter.numpy()))
                    for g in trainer.groups]

        for group in trainer.groups:  # a scale whose scaled gradients stay finite in float16
            group.optimizer.dynamic_scale.assign(2.0**8)
        rates = [g.base_lr for g in trainer.groups for _ in g.group.variables]  # proxies: 100 x lr
        before, counters = [v.numpy().astype(np.float64) for v in variables], state()
        trainer.train_epoch(0)
        assert state() == [(scale, counter + 1) for scale, counter in counters]
        steps = [v.numpy().astype(np.float64) - b for v, b in zip(variables, before)]
        largest = max(np.abs(s).max() for s in steps)
        assert largest > 0
        for step, grad, rate in zip(steps, grads, rates):  # half-precision activations: a loose tolerance
            np.testing.assert_allclose(step, -rate * grad, rtol=0.05, atol=0.02 * largest)

        for group in trainer.groups:  # float16 overflows at 65504
            group.optimizer.dynamic_scale.assign(2.0**100)
        before = [v.numpy() for v in variables]

        def before_groups(values):
            values = iter(values)
            return [[next(values) for _ in g.group.variables] for g in trainer.groups]

        trainer.epoch.assign_add(1)  # as fit() does between epochs
        trainer.train_epoch(1)
        for group, (scale, counter), old in zip(trainer.groups, state(), before_groups(before)):
            # The proxies' gradients never pass through half precision: only they stay finite.
            finite = group.name == "loss"
            assert (scale, counter) == ((2.0**100, 2) if finite else (2.0**99, 0)), group.name
            assert all(np.array_equal(v.numpy(), b) for v, b in zip(group.group.variables, old)) != finite
    finally:
        keras.mixed_precision.set_global_policy("float32")
