"""BN-Inception (Inception v2 with batch normalisation) as Cadene's pretrainedmodels defines it.

References: Ioffe & Szegedy, "Batch Normalization", ICML 2015; the architecture of
``Cadene/pretrained-models.pytorch: pretrainedmodels/models/bninception.py`` (ported from
Caffe; weights ``bn_inception-52deb4733.pth`` / ``-239d2248.pth``, converted by
``pretrained/bn_inception_from_torch.py``), used by DRML, Proxy-Anchor and SoftTriple.

Function: every conv has a bias and is followed by BatchNorm (eps 1e-5) and ReLU (the
reference's in-place ReLUs make its concatenated "_bn_out" tensors the ReLU outputs). Stem:
conv1 7x7/2 -> max 3x3/2 (ceil) -> conv2 1x1 -> conv2 3x3 -> max 3x3/2 (ceil). Blocks 3a, 3b,
4a-4d, 5a, 5b concatenate [1x1, 3x3_reduce->3x3, double_3x3_reduce->double_3x3_1->
double_3x3_2, pool 3x3/1 pad 1 -> pool_proj] (average pool counting the padding, except 5b's
max pool); blocks 3c and 4e reduce the size with stride-2 3x3 convs and a ceil-mode max pool
without projection. The output is the 1024-channel inception_5b map; the embedding model pools
it (the reference: AvgPool 7x7 at 224 px; DRML/Proxy-Anchor: adaptive avg + max).
Input: BGR, 0-255, minus (104, 117, 128), std 1 — preprocessing ``caffe_bgr_bninception``.

Keras layer names are the reference's module names, so the state dict maps one to one.
Deviation: Keras BatchNormalization updates its moving variance with the biased batch
variance (PyTorch: unbiased); irrelevant with frozen BatchNorm, as the references train.

Example:
    >>> from dmltf.models import backbones
    >>> m = backbones.build("bn_inception", (64, 64, 3))
    >>> tuple(m.output_shape[1:])
    (2, 2, 1024)
"""
import keras

from dmltf.models import backbones
from dmltf.models.reference_layers import Pool2D, batch_norm, conv

# block -> (1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3, pool, pool_proj);
# 1x1 = 0 and pool_proj = 0 mark the stride-2 blocks (3c, 4e)
BLOCKS = {
    "inception_3a": (64, 64, 64, 64, 96, "avg", 32),
    "inception_3b": (64, 64, 96, 64, 96, "avg", 64),
    "inception_3c": (0, 128, 160, 64, 96, "max", 0),
    "inception_4a": (224, 64, 96, 96, 128, "avg", 128),
    "inception_4b": (192, 96, 128, 96, 128, "avg", 128),
    "inception_4c": (160, 128, 160, 128, 160, "avg", 128),
    "inception_4d": (96, 128, 192, 160, 192, "avg", 128),
    "inception_4e": (0, 128, 192, 192, 256, "max", 0),
    "inception_5a": (352, 192, 320, 160, 224, "avg", 128),
    "inception_5b": (352, 192, 320, 192, 224, "max", 128),
}
BN_EPS = 1e-5
BN_TORCH_MOMENTUM = 0.9  # as in the reference (PyTorch convention)


def _unit(x, filters, kernel, name, relu_name, strides=1, padding=0):
    """conv -> BN -> ReLU with the reference's module names (``name``, ``name_bn``, relu)."""
    x = conv(x, filters, kernel, name, strides=strides, padding=padding)
    x = batch_norm(x, f"{name}_bn", BN_EPS, BN_TORCH_MOMENTUM)
    return keras.layers.ReLU(name=relu_name)(x)


def _block(x, block):
    n1, n3r, n3, ndr, nd, pool, nproj = BLOCKS[block]
    reduces = not nproj  # stride-2 block
    stride = 2 if reduces else 1
    branches = []
    if n1:
        branches.append(_unit(x, n1, 1, f"{block}_1x1", f"{block}_relu_1x1"))
    b = _unit(x, n3r, 1, f"{block}_3x3_reduce", f"{block}_relu_3x3_reduce")
    branches.append(_unit(b, n3, 3, f"{block}_3x3", f"{block}_relu_3x3", strides=stride, padding=1))
    b = _unit(x, ndr, 1, f"{block}_double_3x3_reduce", f"{block}_relu_double_3x3_reduce")
    b = _unit(b, nd, 3, f"{block}_double_3x3_1", f"{block}_relu_double_3x3_1", padding=1)
    branches.append(_unit(b, nd, 3, f"{block}_double_3x3_2", f"{block}_relu_double_3x3_2", strides=stride, padding=1))
    if reduces:
        branches.append(Pool2D("max", 3, 2, ceil_mode=True, name=f"{block}_pool")(x))
    else:
        b = Pool2D(pool, 3, 1, padding=1, ceil_mode=True, name=f"{block}_pool")(x)
        branches.append(_unit(b, nproj, 1, f"{block}_pool_proj", f"{block}_relu_pool_proj"))
    sizes = {tuple(b.shape[1:3]) for b in branches}
    if len(sizes) > 1:  # the reference's torch.cat fails the same way
        raise ValueError(
            f"BN-Inception: the branches of {block} have spatial sizes {sorted(sizes)} for this "
            "input size; use a size whose stage-3 and stage-4 maps are even (e.g. 224, 227, 64)."
        )
    return keras.layers.Concatenate(name=f"{block}_output")(branches)


def build_bn_inception(input_shape):
    inputs = keras.Input(input_shape)
    x = _unit(inputs, 64, 7, "conv1_7x7_s2", "conv1_relu_7x7", strides=2, padding=3)
    x = Pool2D("max", 3, 2, ceil_mode=True, name="pool1_3x3_s2")(x)
    x = _unit(x, 64, 1, "conv2_3x3_reduce", "conv2_relu_3x3_reduce")
    x = _unit(x, 192, 3, "conv2_3x3", "conv2_relu_3x3", padding=1)
    x = Pool2D("max", 3, 2, ceil_mode=True, name="pool2_3x3_s2")(x)
    for block in BLOCKS:
        x = _block(x, block)
    return keras.Model(inputs, x, name="bn_inception")


@backbones.register(
    "bn_inception",
    preprocessing="caffe_bgr_bninception",
    feature_dim=1024,
    image_size=224,
    weights_help="Convert Cadene's bn_inception-*.pth with `python -m pretrained.bn_inception_from_torch "
    "bn_inception-52deb4733.pth bn_inception.weights.h5` (see pretrained/README.md).",
)
def bn_inception(input_shape):
    return build_bn_inception(input_shape)
