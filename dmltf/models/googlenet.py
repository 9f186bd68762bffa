"""GoogLeNet (Inception v1) in the BVLC Caffe layout, as DVML uses it.

References: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015; the BVLC
``models/bvlc_googlenet/deploy.prototxt``; the DVML TF port
``Xun-Yang/Deep-Variational-Metric-Learning: lib/GoogleNet_Model.py`` (weights from
``tf_ckpt_from_caffe.mat``, converted by ``pretrained/googlenet_from_caffe.py``).

Function: conv1 7x7/2 -> max 3x3/2 (ceil) -> LRN -> conv2 1x1 -> conv2 3x3 -> LRN -> max 3x3/2
(ceil) -> inception 3a, 3b -> max -> 4a..4e -> max -> 5a, 5b; every conv is followed by ReLU and
each inception block concatenates [1x1, 3x3_reduce->3x3, 5x5_reduce->5x5, max 3x3/1->pool_proj].
The output is the 1024-channel inception_5b map (7x7 at 224 or 227 px); the embedding model
pools it (the references' 7x7 VALID average pool is the global average at those sizes).
Input: BGR, 0-255, minus (104, 117, 123) — preprocessing ``caffe_bgr``.

Two registry entries:
- ``googlenet``: the Caffe function (LRN local_size 5, alpha 1e-4 divided by the window, beta
  0.75; all stride-2 max pools in ceil mode).
- ``googlenet_dvml``: the DVML TF port's function (its quirks): TF's LRN with depth_radius 5
  and alpha 1e-4 not divided (= window 11, alpha 11e-4 in Caffe terms), and pool2 in floor
  mode (VALID without the bottom/right pad; identical to Caffe at DVML's 227 px, not at 224).

Example:
    >>> from dmltf.models import backbones
    >>> m = backbones.build("googlenet", (64, 64, 3))
    >>> tuple(m.output_shape[1:])
    (2, 2, 1024)
"""
import keras

from dmltf.models import backbones
from dmltf.models.reference_layers import LocalResponseNorm, Pool2D, conv

# Caffe deploy.prototxt: block -> (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) widths
INCEPTION_BLOCKS = {
    "inception_3a": (64, 96, 128, 16, 32, 32),
    "inception_3b": (128, 128, 192, 32, 96, 64),
    "inception_4a": (192, 96, 208, 16, 48, 64),
    "inception_4b": (160, 112, 224, 24, 64, 64),
    "inception_4c": (128, 128, 256, 24, 64, 64),
    "inception_4d": (112, 144, 288, 32, 64, 64),
    "inception_4e": (256, 160, 320, 32, 128, 128),
    "inception_5a": (256, 160, 320, 32, 128, 128),
    "inception_5b": (384, 192, 384, 48, 128, 128),
}
_BRANCHES = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
_POOL_AFTER = {"inception_3b": "pool3_3x3_s2", "inception_4e": "pool4_3x3_s2"}


def caffe_conv_keys():
    """The Caffe names of the convolutions, in network order (the .mat keys)."""
    keys = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"]
    for block in INCEPTION_BLOCKS:
        keys += [f"{block}/{branch}" for branch in _BRANCHES]
    return keys


def keras_layer_name(caffe_key):
    return caffe_key.replace("/", "_")  # Keras 3 forbids '/' in layer names


def _conv_relu(x, filters, kernel, caffe_key, strides=1, padding=0):
    x = conv(x, filters, kernel, keras_layer_name(caffe_key), strides=strides, padding=padding)
    return keras.layers.ReLU(name=keras_layer_name(caffe_key) + "_relu")(x)


def _inception(x, block):
    n1, n3r, n3, n5r, n5, npool = INCEPTION_BLOCKS[block]
    b1 = _conv_relu(x, n1, 1, f"{block}/1x1")
    b3 = _conv_relu(_conv_relu(x, n3r, 1, f"{block}/3x3_reduce"), n3, 3, f"{block}/3x3", padding=1)
    b5 = _conv_relu(_conv_relu(x, n5r, 1, f"{block}/5x5_reduce"), n5, 5, f"{block}/5x5", padding=2)
    bp = Pool2D("max", 3, 1, padding=1, name=f"{block}_pool")(x)
    bp = _conv_relu(bp, npool, 1, f"{block}/pool_proj")
    return keras.layers.Concatenate(name=f"{block}_output")([b1, b3, b5, bp])


def build_googlenet(input_shape, lrn_size=5, lrn_alpha=1e-4, pool2_ceil=True, name="googlenet"):
    """GoogLeNet to the inception_5b map; the LRN window/alpha and pool2's mode are options."""
    inputs = keras.Input(input_shape)
    x = _conv_relu(inputs, 64, 7, "conv1/7x7_s2", strides=2, padding=3)
    x = Pool2D("max", 3, 2, ceil_mode=True, name="pool1_3x3_s2")(x)
    x = LocalResponseNorm(lrn_size, lrn_alpha, 0.75, name="pool1_norm1")(x)
    x = _conv_relu(x, 64, 1, "conv2/3x3_reduce")
    x = _conv_relu(x, 192, 3, "conv2/3x3", padding=1)
    x = LocalResponseNorm(lrn_size, lrn_alpha, 0.75, name="conv2_norm2")(x)
    x = Pool2D("max", 3, 2, ceil_mode=pool2_ceil, name="pool2_3x3_s2")(x)
    for block in INCEPTION_BLOCKS:
        x = _inception(x, block)
        if block in _POOL_AFTER:
            x = Pool2D("max", 3, 2, ceil_mode=True, name=_POOL_AFTER[block])(x)
    return keras.Model(inputs, x, name=name)


_HELP = (
    "Convert the DVML repository's tf_ckpt_from_caffe.mat with "
    "`python -m pretrained.googlenet_from_caffe tf_ckpt_from_caffe.mat googlenet.weights.h5` "
    "(see pretrained/README.md) and pass the .weights.h5 file."
)


@backbones.register("googlenet", preprocessing="caffe_bgr", feature_dim=1024, image_size=227, weights_help=_HELP)
def googlenet(input_shape):
    return build_googlenet(input_shape)


@backbones.register("googlenet_dvml", preprocessing="caffe_bgr", feature_dim=1024, image_size=227, weights_help=_HELP)
def googlenet_dvml(input_shape):
    return build_googlenet(input_shape, lrn_size=11, lrn_alpha=11e-4, pool2_ceil=False, name="googlenet_dvml")
