"""Ported backbones: registry entries, the Caffe/PyTorch pooling and LRN layers against numpy
references written here, and frozen BatchNorm as PyTorch's eval() with no affine gradients.
Forward equivalence with the reference networks is in test_pretrained.py. Budget: ~25 s.
"""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmltf.models import backbones, build_embedding_model, freeze_batchnorm
from dmltf.models.reference_layers import LocalResponseNorm, Pool2D

PORTED = {  # name -> (preprocessing, feature_dim)
    "googlenet": ("caffe_bgr", 1024),
    "googlenet_dvml": ("caffe_bgr", 1024),
    "bn_inception": ("caffe_bgr_bninception", 1024),
    "resnet50_torch": ("torch_imagenet", 2048),
}


@pytest.mark.parametrize("name", sorted(PORTED))
def test_registry_entry(name):
    spec = backbones.get_spec(name)
    assert (spec.preprocessing, spec.feature_dim) == PORTED[name]
    assert "pretrained" in spec.weights_help
    model = backbones.build(name, (64, 64, 3))
    assert model.output_shape[-1] == spec.feature_dim


@pytest.mark.parametrize("size", [224, 227])
def test_googlenet_gives_the_7x7_map_at_224_and_227(size):
    assert backbones.build("googlenet", (size, size, 3)).output_shape == (None, 7, 7, 1024)


def test_bn_inception_rejects_sizes_the_reference_cannot_concatenate():
    with pytest.raises(ValueError, match="inception_3c"):
        backbones.build("bn_inception", (72, 72, 3))


def _torch_pool(x, mode, k, s, p, ceil_mode):
    """PyTorch's pooling_output_shape and window rules, in numpy loops (NHWC)."""
    n, h, w, c = x.shape

    def out_size(size):
        span = size + 2 * p - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        return out

    oh, ow = out_size(h), out_size(w)
    y = np.zeros((n, oh, ow, c))
    for i, j in itertools.product(range(oh), range(ow)):
        h0, w0 = i * s - p, j * s - p
        h1, w1 = min(h0 + k, h + p), min(w0 + k, w + p)
        window = x[:, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, w)]
        if mode == "max":
            y[:, i, j] = window.max(axis=(1, 2))
        else:  # count_include_pad: the divisor counts the padding, not the ceil overhang
            y[:, i, j] = window.sum(axis=(1, 2)) / ((h1 - h0) * (w1 - w0))
    return y


@pytest.mark.parametrize(
    "mode,k,s,p,ceil_mode,size",
    [
        ("max", 3, 2, 0, True, (6, 9)),  # the Caffe stride-2 pools: overhang on one axis
        ("max", 3, 2, 0, True, (7, 8)),
        ("max", 3, 1, 1, True, (5, 4)),  # inception branch pools
        ("max", 3, 2, 1, False, (8, 7)),  # torchvision ResNet stem
        ("avg", 3, 1, 1, True, (5, 6)),  # BN-Inception branch pools
        ("avg", 2, 2, 0, False, (5, 6)),
    ],
)
def test_pool2d_matches_pytorch_rules(mode, k, s, p, ceil_mode, size):
    x = np.random.default_rng(0).standard_normal((2, *size, 3)).astype("float32")  # negatives: -inf padding matters
    y = Pool2D(mode, k, s, padding=p, ceil_mode=ceil_mode)(x)
    expected = _torch_pool(x.astype(np.float64), mode, k, s, p, ceil_mode)
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)


def test_floor_mode_pool2d_accepts_variable_sizes():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, Pool2D("max", 3, 2, padding=1)(inputs))
    for size in ((8, 7), (5, 6)):
        x = np.random.default_rng(4).standard_normal((1, *size, 2)).astype("float32")
        np.testing.assert_allclose(np.asarray(model(x)), _torch_pool(x, "max", 3, 2, 1, False), rtol=1e-6)


def test_pool2d_refuses_an_average_overhang():
    with pytest.raises(ValueError, match="overhang"):
        Pool2D("avg", 3, 2, ceil_mode=True)(np.zeros((1, 6, 6, 1), "float32"))


@pytest.mark.parametrize("size,alpha", [(5, 1e-4), (11, 11e-4)])
def test_local_response_norm_matches_caffe_formula(size, alpha):
    x = np.random.default_rng(1).uniform(-100, 100, (2, 3, 3, 16))
    y = LocalResponseNorm(size, alpha, 0.75)(x.astype("float32"))
    sq = np.pad(x**2, [(0, 0)] * 3 + [(size // 2, size // 2)])
    window = sum(sq[..., j : j + 16] for j in range(size))
    expected = x / (1.0 + alpha / size * window) ** 0.75
    assert np.abs(expected / x - 1).max() > 0.1  # the normalisation is not negligible here
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5)


def test_pool_and_lrn_configs_round_trip():
    for layer in (Pool2D("max", 3, 2, padding=1, ceil_mode=True), LocalResponseNorm(11, 2e-4, 0.5, 2.0)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_frozen_batchnorm_is_pytorch_eval_without_affine_gradients():
    model = build_embedding_model("resnet50_torch", (32, 32, 3), embedding_dim=8, l2_normalize=False)
    bns = [l for l in model.get_layer("backbone").layers if isinstance(l, keras.layers.BatchNormalization)]
    rng = np.random.default_rng(2)
    for bn in bns:  # non-trivial statistics, so that batch statistics differ from them
        bn.moving_mean.assign(rng.normal(0, 0.5, bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape))
    x = rng.standard_normal((4, 32, 32, 3)).astype("float32")
    assert np.abs(np.asarray(model(x, training=True)) - np.asarray(model(x, training=False))).max() > 1e-3

    freeze_batchnorm(model)
    bn_vars = [v for bn in bns for v in bn.weights]
    before = [np.array(v) for v in bn_vars]
    np.testing.assert_allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)), atol=1e-5)
    trainable = {id(v) for v in model.trainable_variables}
    assert not any(id(v) in trainable for v in bn_vars)
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    kernel = model.get_layer("backbone").get_layer("conv1").kernel
    kernel_before = np.array(kernel)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert np.abs(np.array(kernel) - kernel_before).max() > 0  # the rest trains
    for v, b in zip(bn_vars, before):  # statistics and affine weights do not
        np.testing.assert_array_equal(np.array(v), b)


def test_every_backbone_names_a_known_preprocessing():
    from dmltf.data import preprocessing

    for name in backbones.names():
        preprocessing.get(backbones.get_spec(name).preprocessing)  # raises on an unknown name
    x = np.random.default_rng(3).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(  # the Keras ResNet50 entry's means are Keras' own
        np.asarray(preprocessing.get("caffe_bgr_keras")(x)), keras.applications.resnet50.preprocess_input(x.copy()), atol=1e-4
    )
