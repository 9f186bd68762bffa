"""Backbone registry: name -> a Keras model from images to an NHWC feature map.

Each backbone names the preprocessing its weights expect (``dmltf.data.preprocessing``), its
feature width and default input size. Weights are never downloaded: ``weights`` is a local
file (a Keras ``.weights.h5`` made by the converters in ``pretrained/``, or for the Keras
Applications backbones also the Keras Applications ``..._notop.h5`` file itself, in Keras 2's
HDF5 layout, which Keras 3 loads layer by layer in order) or None for random initialisation.
A missing file is an error that says how to get it; a file that does not fit the backbone is an
error naming the file.

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
    if weights and not os.path.exists(weights):  # before building: a large network takes seconds
        raise FileNotFoundError(f"Backbone weights {weights!r} for {name!r} not found. {spec.weights_help}")
    model = spec.builder(tuple(input_shape))
    if weights:
        try:
            model.load_weights(weights)
        except (ValueError, OSError, KeyError) as e:
            raise ValueError(f"Backbone weights {weights!r} do not fit {name!r} ({e}). {spec.weights_help}") from e
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
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
# The notop file keras.applications.InceptionV3(weights="imagenet", include_top=False) downloads:
# shi510/dml-tf's backbone (net_arch/models.py).
INCEPTION_V3_NOTOP = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
_INCEPTION_V3_HELP = (
    f"Download {KERAS_APPLICATIONS_URL}inception_v3/{INCEPTION_V3_NOTOP} on a machine with internet access "
    "(the Keras Applications ImageNet weights without the top, as include_top=False loads them) and pass it "
    "with --backbone_weights; a model.save_weights('inception_v3.weights.h5') of that model works too."
)
for _name, _app, _pre, _dim, _size, _help in (
    ("resnet50", "ResNet50", "caffe_bgr_keras", 2048, 224, _KERAS_HELP.format(app="ResNet50", name="resnet50")),
    ("inception_v3", "InceptionV3", "keras_inception", 2048, 299, _INCEPTION_V3_HELP),
    ("mobilenet_v2", "MobileNetV2", "keras_inception", 1280, 224,
     _KERAS_HELP.format(app="MobileNetV2", name="mobilenet_v2")),
):
    register(_name, preprocessing=_pre, feature_dim=_dim, image_size=_size, weights_help=_help)(_keras_app(_app))


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
