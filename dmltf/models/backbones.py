"""Backbone registry: name -> a Keras model from images to an NHWC feature map.

Each backbone names the preprocessing its weights expect (``dmltf.data.preprocessing``), its
feature width and default input size. Weights are never downloaded: ``weights`` is a local
file (a Keras ``.weights.h5`` made by the converters in ``pretrained/``) or None for random
initialisation. A missing file is an error that says how to make it.

Example:
    >>> from dmltf.models import backbones
    >>> spec = backbones.get_spec("small_cnn")
    >>> m = backbones.build("small_cnn", (8, 8, 1))
    >>> tuple(m.output_shape[1:]) == (2, 2, spec.feature_dim)
    True
"""
import os
from dataclasses import dataclass
from typing import Callable

import keras

from dmltf.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable  # (input_shape) -> keras.Model with an NHWC output
    preprocessing: str
    feature_dim: int
    image_size: int
    weights_help: str  # how a user gets the local weights file


BACKBONES = Registry("backbone")
names, get_spec = BACKBONES.names, BACKBONES.lookup


def register(name, *, preprocessing, feature_dim, image_size, weights_help):
    """Decorator for a builder ``fn(input_shape) -> keras.Model``."""

    def wrap(fn):
        BACKBONES.add(name, BackboneSpec(name, fn, preprocessing, feature_dim, image_size, weights_help))
        return fn

    return wrap


def build(name, input_shape, weights=None):
    """The backbone ``name`` for ``input_shape`` (H, W, C), with local ``weights`` if given."""
    spec = get_spec(name)
    model = spec.builder(tuple(input_shape))
    if weights:
        if not os.path.exists(weights):
            raise FileNotFoundError(f"Backbone weights {weights!r} for {name!r} not found. {spec.weights_help}")
        model.load_weights(weights)
    return model


def _keras_app(app_name):
    def builder(input_shape):
        app = getattr(keras.applications, app_name)
        return app(include_top=False, weights=None, input_shape=input_shape)

    return builder


_KERAS_HELP = (
    "Save the ImageNet weights of keras.applications.{app} on a machine with internet access "
    "(model.save_weights('{name}.weights.h5')) and pass the file with --backbone_weights."
)
for _name, _app, _pre, _dim, _size in (
    ("resnet50", "ResNet50", "caffe_bgr_keras", 2048, 224),
    ("inception_v3", "InceptionV3", "keras_inception", 2048, 299),
    ("mobilenet_v2", "MobileNetV2", "keras_inception", 1280, 224),
):
    register(
        _name, preprocessing=_pre, feature_dim=_dim, image_size=_size,
        weights_help=_KERAS_HELP.format(app=_app, name=_name),
    )(_keras_app(_app))


@register("small_cnn", preprocessing="none", feature_dim=128, image_size=8, weights_help="small_cnn has no pretrained weights.")
def small_cnn(input_shape, width=32):
    """Three conv-BN-ReLU stages with 2x2 max-pooling: for tests and the digits demo."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i < 2:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    return keras.Model(inputs, x, name="small_cnn")
