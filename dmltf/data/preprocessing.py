"""Backbone input preprocessing, applied after augmentation to float32 images in [0, 255].

=========================  ==================================================================
name                       output
=========================  ==================================================================
``none``                   x / 255, in [0, 1] (any channel count)
``raw``                    x unchanged, 0-255 (any channel count)
``caffe_bgr``              RGB -> BGR, minus per-channel means (B, G, R) = (104, 117, 123):
                           Caffe GoogLeNet as in DVML (``means=`` overrides)
``caffe_bgr_bninception``  as caffe_bgr with means (104, 117, 128): Cadene BN-Inception
``caffe_bgr_keras``        as caffe_bgr with Keras' means (103.939, 116.779, 123.68): ResNet50
``torch_imagenet``         x / 255, minus mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225)
``torch_imagenet_lm``      as torch_imagenet with std (0.228, 0.224, 0.225): LM-Metric's
                           ``datasets/sop.py`` typo, for reproducing its runs only
``keras_inception``        x / 127.5 - 1, in [-1, 1] (Keras Applications "tf" mode)
``unit_rgb``               x / 255, in [0, 1], as RGB: what shi510/dml-tf (``input_pipeline.py``,
                           1df42c0 to HEAD) feeds its ImageNet InceptionV3, which expects
                           ``keras_inception``'s [-1, 1]; for reproducing that run only
=========================  ==================================================================

Written with keras.ops, so the same function serves a single image or a batch (last axis =
channels). The ImageNet normalisations (all but ``none`` and ``raw``) replicate a grayscale
channel three times first, as PIL's ``convert("RGB")`` does, so grayscale data can feed an
ImageNet backbone; :func:`output_channels` tells the model's input width.

Example:
    >>> import numpy as np
    >>> from dmltf.data import preprocessing
    >>> f = preprocessing.get("caffe_bgr")
    >>> np.asarray(f(np.array([[10.0, 20.0, 200.0]], "float32"))).tolist()
    [[96.0, -97.0, -113.0]]
"""
import functools

from keras import ops

from dmltf.registry import Registry

PREPROCESSINGS = Registry("preprocessing")
register, names = PREPROCESSINGS.register, PREPROCESSINGS.names


def get(identifier, **kwargs):
    """A preprocessing function by name (kwargs such as ``means=`` are bound), or a callable."""
    if callable(identifier):
        return identifier
    fn = functools.partial(PREPROCESSINGS.lookup(identifier), **kwargs)
    fn.name = identifier
    return fn


RGB_ONLY = ("caffe_bgr", "caffe_bgr_bninception", "caffe_bgr_keras", "torch_imagenet", "torch_imagenet_lm",
            "keras_inception", "unit_rgb")


def output_channels(name, input_channels):
    """Channels a preprocessing yields for inputs of ``input_channels`` channels."""
    return 3 if name in RGB_ONLY else input_channels


def _as_rgb(x, name):
    if x.shape[-1] == 1:
        return ops.concatenate([x, x, x], axis=-1)
    if x.shape[-1] != 3:
        raise ValueError(f"preprocessing {name!r} needs RGB or grayscale images, got shape {tuple(x.shape)}")
    return x


@register("none")
def unit_range(x):
    return ops.cast(x, "float32") / 255.0


@register("raw")
def raw(x):
    return ops.cast(x, "float32")


@register("caffe_bgr")
def caffe_bgr(x, means=(104.0, 117.0, 123.0)):
    """``means`` are in BGR order, as Caffe lists them."""
    x = _as_rgb(x, "caffe_bgr")
    return ops.flip(ops.cast(x, "float32"), axis=-1) - ops.convert_to_tensor(means, "float32")


@register("caffe_bgr_bninception")
def caffe_bgr_bninception(x):
    return caffe_bgr(x, means=(104.0, 117.0, 128.0))


@register("caffe_bgr_keras")
def caffe_bgr_keras(x):
    return caffe_bgr(x, means=(103.939, 116.779, 123.68))


@register("torch_imagenet")
def torch_imagenet(x, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    return _normalize_imagenet(x, "torch_imagenet", mean, std)


def _normalize_imagenet(x, name, mean, std):
    x = _as_rgb(x, name)
    return (ops.cast(x, "float32") / 255.0 - ops.convert_to_tensor(mean, "float32")) / ops.convert_to_tensor(
        std, "float32")


@register("torch_imagenet_lm")
def torch_imagenet_lm(x):
    """LM-Metric's Normalize(mean (0.485, 0.456, 0.406), std (0.228, 0.224, 0.225)): 0.228 is a
    typo for ImageNet's 0.229 that its runs used (METHODS.md 2.3)."""
    return _normalize_imagenet(x, "torch_imagenet_lm", (0.485, 0.456, 0.406), (0.228, 0.224, 0.225))


@register("keras_inception")
def keras_inception(x):
    return ops.cast(_as_rgb(x, "keras_inception"), "float32") / 127.5 - 1.0


@register("unit_rgb")
def unit_rgb(x):
    """dml-tf's ``tf.cast(x, tf.float32) / 255.`` before its InceptionV3 (the seed's quirk; the
    correct input of the Keras ImageNet weights is ``keras_inception``)."""
    return ops.cast(_as_rgb(x, "unit_rgb"), "float32") / 255.0
