"""Conditional Glow (dmltf/models/glow.py) against an independent NumPy float64 re-implementation
of the reference's PyTorch code (NCHW, ``Shiyang-Yan/LM-metric`` ``models/glow``), autodiff
Jacobians, and ActNorm/serialisation/distribution checks; tiny configurations only."""
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf.models.glow import ActNorm, ConditionalGlow, squeeze2x2, unsqueeze2x2

BOUND = 0.95


def tiny_glow(levels=1, steps=2, shape=(4, 4, 1), seed=0):
    glow = ConditionalGlow(num_channels=8, num_levels=levels, num_steps=steps, image_shape=shape, seed=seed)
    glow.build()
    return glow


def perturb(glow, seed=0):
    """Non-trivial weights everywhere (the zero-initialised last conv makes each coupling the
    identity at init); ActNorms marked initialised so that training calls keep them."""
    rng = np.random.default_rng(seed)
    for level_steps in glow.steps:
        for actnorm, invconv, coupling in level_steps:
            c = actnorm.bias.shape[0]
            actnorm.bias.assign(rng.normal(0, 0.3, c))
            actnorm.logs.assign(rng.normal(0, 0.2, c))
            actnorm.initialized.assign(1.0)
            invconv.weight.assign(invconv.weight.numpy() + rng.normal(0, 0.2, (c, c)))
            for weight in coupling.weights:
                if "moving_variance" in weight.path:
                    weight.assign(rng.uniform(0.5, 2.0, weight.shape))
                elif weight.path.endswith(("gamma", "scale")):
                    weight.assign(rng.uniform(0.5, 1.5, weight.shape))
                else:
                    weight.assign(weight.numpy() + rng.normal(0, 0.15, weight.shape))
    return glow


def unit_inputs(shape, seed, batch=2):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.02, 0.98, (batch, *shape)).astype("float32")


# ---------------------------------------------------------------- NumPy reference (PyTorch layout)

def np_squeeze(x):  # glow.py squeeze(): view, permute(0, 1, 3, 5, 2, 4), view
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def np_unsqueeze(x):
    b, c, h, w = x.shape
    return x.reshape(b, c // 4, 2, 2, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


def np_conv(x, conv):
    """PyTorch Conv2d(padding=k // 2) with the Keras kernel ported to (out, in, kh, kw)."""
    w = np.transpose(conv.kernel.numpy().astype(np.float64), (3, 2, 0, 1))
    k, (h, wd) = w.shape[-1], x.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = sum(np.einsum("bihw,oi->bohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
              for i in range(k) for j in range(k))
    if conv.use_bias:
        out = out + conv.bias.numpy()[None, :, None, None]
    return out


def np_bn(x, bn, training):
    if training:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    else:
        mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    col = lambda v: np.asarray(v, np.float64)[None, :, None, None]  # noqa: E731
    return col(gamma) * (x - col(mean)) / np.sqrt(col(var) + 1e-5) + col(beta)


def np_coupling(x, cond, cp, training):
    c = x.shape[1]
    x_change, x_id = x[:, :c // 2], x[:, c // 2:]
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    h = np_bn(x_id, cp.in_norm, training)
    h = relu(np_conv(h, cp.in_conv) + np_conv(cond, cp.in_condconv))
    h = relu(np_bn(np_conv(h, cp.mid_conv1) + np_conv(cond, cp.mid_condconv1), cp.mid_norm, training))
    h = relu(np_bn(np_conv(h, cp.mid_conv2) + np_conv(cond, cp.mid_condconv2), cp.out_norm, training))
    st = np_conv(h, cp.out_conv)
    s = cp.scale.numpy()[None, :, None, None] * np.tanh(st[:, 0::2])
    return np.concatenate([(x_change + st[:, 1::2]) * np.exp(s), x_id], axis=1), s.sum(axis=(1, 2, 3))


def np_levels(glow, level, x, cond, log_det, training):
    for actnorm, invconv, coupling in glow.steps[level]:
        pixels = x.shape[2] * x.shape[3]
        x = (x + actnorm.bias.numpy()[None, :, None, None]) * np.exp(actnorm.logs.numpy())[None, :, None, None]
        log_det = log_det + actnorm.logs.numpy().astype(np.float64).sum() * pixels
        w = invconv.weight.numpy().astype(np.float64)
        x = np.einsum("oi,bihw->bohw", w, x)
        log_det = log_det + np.linalg.slogdet(w)[1] * pixels
        x, coupling_log_det = np_coupling(x, cond, coupling, training)
        log_det = log_det + coupling_log_det
    if level + 1 < glow.num_levels:
        x, cond = np_squeeze(x), np_squeeze(cond)
        half = x.shape[1] // 2
        x_next, log_det = np_levels(glow, level + 1, x[:, :half], cond, log_det, training)
        x = np_unsqueeze(np.concatenate([x_next, x[:, half:]], axis=1))
    return x, log_det


def np_glow_nll(glow, x, cond, u, training):
    """(z NHWC, per-sample NLL): Glow.forward + NLLLoss(k=256) before the batch mean, float64."""
    nchw = lambda v: np.transpose(np.asarray(v, np.float64), (0, 3, 1, 2))  # noqa: E731
    y = (255.0 * nchw(x) + nchw(u)) / 256.0
    p = (1.0 + BOUND * (2.0 * y - 1.0)) / 2.0
    log_det = (math.log(BOUND) - np.log(p) - np.log(1.0 - p)).sum(axis=(1, 2, 3))  # d logit(p) / dy
    z, log_det = np_levels(glow, 0, np_squeeze(np.log(p / (1.0 - p))), np_squeeze(nchw(cond)), log_det, training)
    z = np_unsqueeze(z)
    dims = z[0].size
    prior = (-0.5 * (z ** 2 + math.log(2 * math.pi))).sum(axis=(1, 2, 3)) - math.log(256) * dims
    return np.transpose(z, (0, 2, 3, 1)), -(prior + log_det)


# ---------------------------------------------------------------- tests

def test_squeeze_matches_reference_channel_order():
    x = np.arange(2 * 3 * 4 * 6, dtype="float32").reshape(2, 4, 6, 3)  # NHWC, 3 channels
    squeezed = squeeze2x2(x).numpy()
    expected = np.transpose(np_squeeze(np.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1))
    np.testing.assert_array_equal(squeezed, expected)
    np.testing.assert_array_equal(unsqueeze2x2(squeezed).numpy(), x)


@pytest.mark.parametrize("training", [False, True])
def test_flow_is_invertible(training):
    glow = perturb(tiny_glow(levels=2, steps=2, shape=(4, 8, 1)), seed=1)
    x, cond = unit_inputs((4, 8, 1), 2, batch=3), unit_inputs((4, 8, 1), 3, batch=3)
    y, _ = glow.preprocess(x, dequantize=False)
    z, log_det = glow.flow_forward(y, cond, training=training)
    y_back, inverse_log_det = glow.flow_inverse(z, cond, training=training)
    assert np.abs(z.numpy() - y.numpy()).max() > 0.1  # the flow is not the identity
    np.testing.assert_allclose(y_back.numpy(), y.numpy(), atol=1e-5)
    np.testing.assert_allclose(log_det.numpy() + inverse_log_det.numpy(), 0.0, atol=1e-4)
    # The reference's reverse pass ends in a sigmoid, which does not undo the 0.95 bound.
    u = unit_inputs((4, 8, 1), 4, batch=3)
    z, _ = glow.forward(x, cond, training=training, noise=u)
    dequantised = (255.0 * x.astype(np.float64) + u) / 256.0
    np.testing.assert_allclose(glow.inverse(z, cond, training=training).numpy(),
                               (1.0 + BOUND * (2.0 * dequantised - 1.0)) / 2.0, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_log_det_equals_autodiff_jacobian(training):
    glow = perturb(tiny_glow(levels=1, steps=2, shape=(4, 4, 1)), seed=5)
    x, cond = unit_inputs((4, 4, 1), 6), unit_inputs((4, 4, 1), 7)
    u = unit_inputs((4, 4, 1), 8)
    flat = tf.constant(x.reshape(-1))
    for dequantize, per_dim_scale in ((False, 1.0), (True, 255.0 / 256.0)):
        with tf.GradientTape() as tape:
            tape.watch(flat)
            z, log_det = glow.forward(tf.reshape(flat, x.shape), cond, training=training,
                                      noise=u, dequantize=dequantize)
            z_flat = tf.reshape(z, [-1])
        # The whole batch as one map: in training mode BatchNorm couples the samples, but each
        # coupling stays triangular, so the total log-det is the sum of the per-sample ones.
        jacobian = tape.jacobian(z_flat, flat).numpy().astype(np.float64)
        sign, total = np.linalg.slogdet(jacobian)
        assert sign != 0
        # Glow's log-det is of y -> z; dequantisation y = (255 x + u) / 256 adds D log(255/256).
        expected = log_det.numpy().sum() + x.size * math.log(per_dim_scale)
        np.testing.assert_allclose(total, expected, rtol=1e-4, atol=1e-3)
        if not training:  # samples independent: per-sample blocks
            d = x[0].size
            for i in range(x.shape[0]):
                block = jacobian[i * d:(i + 1) * d, i * d:(i + 1) * d]
                np.testing.assert_allclose(np.linalg.slogdet(block)[1],
                                           log_det.numpy()[i] + d * math.log(per_dim_scale), rtol=1e-4, atol=1e-3)


def np_actnorm_init(x):
    mean = x.astype(np.float64).mean(axis=(0, 1, 2))
    std = np.sqrt(((x - mean) ** 2).mean(axis=(0, 1, 2)))
    return -mean, np.log(1.0 / (std + 1e-6))


def test_actnorm_data_init_first_batch_only(tmp_path):
    rng = np.random.default_rng(0)
    first = (rng.normal(2.0, 3.0, (4, 3, 5, 2)) * [1.0, 0.1]).astype("float32")
    second = rng.normal(-1.0, 0.5, (4, 3, 5, 2)).astype("float32")
    layer = ActNorm()
    layer.build(first.shape)
    untouched = layer.forward(first, training=False)[0].numpy()  # eval mode never initialises
    np.testing.assert_array_equal(untouched, first)
    assert float(layer.initialized.numpy()) == 0.0

    step = tf.function(lambda v: layer.forward(v, training=True))
    y, log_det = step(first)
    y = y.numpy().astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, rtol=1e-4)
    bias, logs = np_actnorm_init(first)
    np.testing.assert_allclose(layer.bias.numpy(), bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.logs.numpy(), logs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(log_det), 3 * 5 * logs.sum(), rtol=1e-5)
    assert float(layer.initialized.numpy()) == 1.0

    step(second)  # the same traced function: must not re-initialise
    np.testing.assert_allclose(layer.bias.numpy(), bias, rtol=1e-5, atol=1e-6)

    path = tf.train.Checkpoint(layer=layer).write(os.path.join(tmp_path, "actnorm"))
    restored = ActNorm()
    restored.build(first.shape)
    tf.train.Checkpoint(layer=restored).read(path).assert_existing_objects_matched()
    restored.forward(second, training=True)
    np.testing.assert_array_equal(restored.bias.numpy(), layer.bias.numpy())
    np.testing.assert_array_equal(restored.logs.numpy(), layer.logs.numpy())
    x, _ = restored.inverse(restored.forward(second)[0])
    np.testing.assert_allclose(x.numpy(), second, atol=1e-5)


def two_replicas():
    """Two replicas on conftest's two logical CPUs. ReductionToOneDevice: collective all-reduces of
    several MirroredStrategy instances in one process can reuse instance keys and clash."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def test_actnorm_init_under_mirrored_strategy_uses_global_batch():
    strategy = two_replicas()
    rng = np.random.default_rng(3)
    batches = [rng.normal(1.0, 2.0, (4, 2, 2, 3)).astype("float32") for _ in range(2)]
    with strategy.scope():
        layer = ActNorm()
        layer.build((None, 2, 2, 3))

    @tf.function
    def step(values):
        return strategy.run(lambda v: layer.forward(v, training=True)[0], (values,))

    for batch in batches:  # replica r gets rows 2r, 2r + 1 of the global batch of 4
        step(strategy.experimental_distribute_values_from_function(
            lambda ctx, b=batch: tf.constant(b[2 * ctx.replica_id_in_sync_group:2 * ctx.replica_id_in_sync_group + 2])))
    bias, logs = np_actnorm_init(batches[0])
    for replica_bias, replica_logs in zip(layer.bias.value.values, layer.logs.value.values):
        np.testing.assert_allclose(replica_bias.numpy(), bias, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(replica_logs.numpy(), logs, rtol=1e-5, atol=1e-6)


def test_glow_train_step_under_mirrored_strategy_keeps_replicas_equal():
    strategy = two_replicas()
    with strategy.scope():
        glow = ConditionalGlow(num_channels=4, num_levels=1, num_steps=1, image_shape=(4, 4, 1),
                               synchronized_batchnorm=True)
        glow.build()
        optimizer = keras.optimizers.SGD(1e-2)
        optimizer.build(glow.trainable_variables)

    @tf.function
    def step(x, cond):
        def replica_step(x, cond):
            context = tf.distribute.get_replica_context()
            seed = tf.stack([0, context.replica_id_in_sync_group])
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(glow.nll(x, cond, training=True, seed=seed))
                loss += tf.reduce_mean(glow.sample(cond, training=True, seed=seed + 1))
                scaled = loss / context.num_replicas_in_sync
            grads = tape.gradient(scaled, glow.trainable_variables)
            optimizer.apply_gradients(zip(grads, glow.trainable_variables))
            return loss
        return strategy.run(replica_step, (x, cond))

    data = tf.data.Dataset.from_tensor_slices((unit_inputs((4, 4, 1), 50, 8), unit_inputs((4, 4, 1), 51, 8))).batch(4)
    for x, cond in strategy.experimental_distribute_dataset(data):
        losses = step(x, cond)
        assert all(np.isfinite(v.numpy()) for v in losses.values)
    for variable in glow.variables:
        if "seed_generator" in variable.path:
            continue
        first, second = (v.numpy() for v in variable.value.values)  # BN statistics too (synchronized)
        np.testing.assert_allclose(first, second, rtol=1e-6, atol=1e-7, err_msg=variable.path)
    assert float(glow.steps[0][0][0].initialized.numpy()) == 1.0


def test_glow_is_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        glow = perturb(tiny_glow(levels=2, steps=1, shape=(4, 8, 1)), seed=61)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    x = unit_inputs((4, 8, 1), 62)
    y, _ = glow.preprocess(x, dequantize=False)
    z, _ = glow.flow_forward(y, x, training=True)
    assert z.dtype == "float32" and all(w.dtype == "float32" for w in glow.weights)
    np.testing.assert_allclose(glow.flow_inverse(z, x, training=True)[0].numpy(), y.numpy(), atol=1e-5)


def test_glow_training_call_initialises_every_actnorm():
    glow = tiny_glow(levels=2, steps=2, shape=(4, 8, 1))
    x = unit_inputs((4, 8, 1), 0, batch=4)
    y, _ = glow.preprocess(x, dequantize=False)
    glow.flow_forward(y, x, training=True)
    flags = [float(a.initialized.numpy()) for level in glow.steps for a, _, _ in level]
    assert flags == [1.0] * 4
    # First ActNorm sees the squeezed logits: standardised per channel on that batch.
    first = glow.steps[0][0][0]
    out = first.forward(squeeze2x2(y))[0].numpy().astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), 1.0, rtol=1e-4)


def test_preprocess_matches_numpy_including_edges():
    glow = tiny_glow()
    x = unit_inputs((4, 4, 1), 1)
    x[0, 0, 0, 0], x[0, 0, 1, 0] = 0.0, 1.0
    u = unit_inputs((4, 4, 1), 2)
    u[0, 0, 1, 0] = 0.999999
    y, log_det = glow.preprocess(x, noise=u)
    p = (1.0 + BOUND * (2.0 * (255.0 * x.astype(np.float64) + u) / 256.0 - 1.0)) / 2.0
    np.testing.assert_allclose(y.numpy(), np.log(p / (1 - p)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_det.numpy(), (math.log(BOUND) - np.log(p) - np.log(1 - p)).sum(axis=(1, 2, 3)),
                               rtol=1e-5)
    seeded = [glow.preprocess(x, seed=tf.constant([4, 5]))[0].numpy() for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    drawn = [glow.preprocess(x)[0].numpy() for _ in range(2)]  # the layer's generator advances
    assert np.abs(drawn[0] - drawn[1]).max() > 1e-4


@pytest.mark.parametrize("training", [False, True])
def test_nll_equals_numpy_reference(training):
    glow = perturb(tiny_glow(levels=2, steps=1, shape=(4, 8, 1)), seed=11)
    x, cond, u = (unit_inputs((4, 8, 1), s, batch=3) for s in (12, 13, 14))
    expected_z, expected_nll = np_glow_nll(glow, x, cond, u, training)
    z, _ = glow.forward(x, cond, training=training, noise=u)
    np.testing.assert_allclose(z.numpy(), expected_z, rtol=1e-4, atol=1e-4)
    nll = glow.nll(x, cond, training=training, noise=u).numpy()
    assert nll.shape == (3,)
    np.testing.assert_allclose(nll, expected_nll, rtol=1e-5, atol=1e-3)


def test_sampling():
    glow = perturb(tiny_glow(levels=2, steps=2, shape=(4, 8, 1)), seed=21)
    cond = unit_inputs((4, 8, 1), 22, batch=3)
    eps = np.random.default_rng(23).normal(size=cond.shape).astype("float32")
    np.testing.assert_array_equal(glow.sample(cond, deterministic=True).numpy(),
                                  glow.inverse(np.zeros_like(cond), cond).numpy())
    np.testing.assert_allclose(glow.sample(cond, temperature=0.3, noise=eps).numpy(),
                               glow.inverse(0.3 * eps, cond).numpy(), atol=1e-6)
    hot, cold = glow.sample(cond, temperature=1.0, noise=eps), glow.sample(cond, temperature=0.0, noise=eps)
    assert np.abs(hot.numpy() - cold.numpy()).max() > 1e-3
    np.testing.assert_allclose(cold.numpy(), glow.sample(cond, deterministic=True).numpy(), atol=1e-6)
    seed = tf.constant([7, 8])
    first, again = glow.sample(cond, seed=seed), glow.sample(cond, seed=seed)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert np.abs(first.numpy() - glow.sample(cond, seed=tf.constant([7, 9])).numpy()).max() > 1e-4
    assert ((first.numpy() > 0) & (first.numpy() < 1)).all()
    twin = perturb(tiny_glow(levels=2, steps=2, shape=(4, 8, 1)), seed=21)  # same seed, same generator
    np.testing.assert_array_equal(glow.sample(cond).numpy(), twin.sample(cond).numpy())


def test_gradients_flow_into_cond_and_weights_and_nll_detaches_inputs():
    cond = tf.constant(unit_inputs((4, 8, 1), 31, batch=4))
    x = tf.constant(unit_inputs((4, 8, 1), 32, batch=4))
    fresh = tiny_glow(levels=2, steps=2, shape=(4, 8, 1))
    trained = perturb(tiny_glow(levels=2, steps=2, shape=(4, 8, 1)), seed=33)
    grads = {}
    for name, glow in (("fresh", fresh), ("trained", trained)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([cond, x])
            sample = glow.sample(cond, training=True, seed=tf.constant([1, 2]))
            sample_loss = tf.reduce_sum(tf.square(sample - 0.3))
            nll = tf.reduce_mean(glow.nll(x, cond, training=True, seed=tf.constant([3, 4])))
        out_kernel = glow.steps[0][0][2].out_conv.kernel
        grads[name] = (tape.gradient(sample_loss, cond), tape.gradient(sample_loss, out_kernel),
                       tape.gradient(nll, [x, cond]), tape.gradient(nll, glow.trainable_weights),
                       tape.gradient(nll, out_kernel))
    # Zero-initialised last convs: each coupling is the identity, so the sample ignores cond at init
    # (as in the reference) while the last convs already get gradient.
    np.testing.assert_array_equal(grads["fresh"][0].numpy(), 0.0)
    for name in ("fresh", "trained"):
        _, sample_kernel_grad, nll_input_grads, nll_weight_grads, nll_kernel_grad = grads[name]
        assert np.abs(sample_kernel_grad.numpy()).max() > 0
        assert nll_input_grads == [None, None]  # detached inputs, as LM-Metric's .detach()
        assert all(g is not None for g in nll_weight_grads)
        assert np.abs(nll_kernel_grad.numpy()).max() > 0
    assert np.abs(grads["trained"][0].numpy()).max() > 0


def test_config_round_trip_and_keras_save_load(tmp_path):
    glow = ConditionalGlow(num_channels=8, num_levels=2, num_steps=2, image_shape=(4, 8, 1), seed=3, name="glow")
    config = glow.get_config()
    clone = ConditionalGlow.from_config(config)
    assert clone.get_config() == config
    x_in, c_in = keras.Input((4, 8, 1), name="x"), keras.Input((4, 8, 1), name="cond")
    z, log_det = glow(x_in, c_in, dequantize=False)
    model = keras.Model([x_in, c_in], [z, log_det])
    perturb(glow, seed=41)
    x, cond = unit_inputs((4, 8, 1), 42), unit_inputs((4, 8, 1), 43)
    before = model([x, cond])
    path = os.path.join(tmp_path, "glow.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded([x, cond])
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded_glow = loaded.get_layer("glow")
    assert isinstance(loaded_glow, ConditionalGlow)
    np.testing.assert_array_equal(loaded_glow.sample(cond, deterministic=True).numpy(),
                                  glow.sample(cond, deterministic=True).numpy())


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="glow.py.*divisible"):
        ConditionalGlow(num_levels=2, image_shape=(4, 6, 1))
    glow = tiny_glow()
    with pytest.raises(ValueError, match="glow.py.*cond must have shape"):
        glow.sample(np.zeros((2, 4, 8, 1), "float32"))


def test_a_checkpoint_holds_every_variable_of_the_flow(tmp_path):
    """After a training call (ActNorm initialised, BatchNorm statistics moved), a checkpoint of
    the flow restores every variable, non-trainable ones included, into a fresh flow."""
    glow = tiny_glow(levels=2, steps=2, shape=(4, 8, 1), seed=3)
    rng = np.random.default_rng(0)
    x, cond = rng.uniform(0.05, 0.95, (6, 4, 8, 1)).astype("float32"), rng.normal(size=(6, 4, 8, 1)).astype("float32")
    glow.nll(x, cond, training=True, noise=np.full(x.shape, 0.5, "float32"))
    moved = [v for v in glow.non_trainable_variables if "moving_mean" in v.path]
    assert moved and any(np.any(v.numpy() != 0) for v in moved)
    path = tf.train.Checkpoint(flow=glow).write(str(tmp_path / "ckpt"))
    fresh = tiny_glow(levels=2, steps=2, shape=(4, 8, 1), seed=4)
    tf.train.Checkpoint(flow=fresh).read(path).assert_consumed()
    assert len(fresh.variables) == len(glow.variables) > 0
    for a, b in zip(glow.variables, fresh.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
