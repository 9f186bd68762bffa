"""ResNet-50 in torchvision's layout ("ResNet v1.5"), for torchvision / pretrainedmodels weights.

References: He et al., "Deep Residual Learning", CVPR 2016; ``pytorch/vision:
torchvision/models/resnet.py`` (``Bottleneck``, ``resnet50``), whose ImageNet weights LM-Metric,
PADS and ProxyNCA++ start from; converted by ``pretrained/resnet50_from_torch.py``.

Function: conv1 7x7/2 pad 3 (no bias) -> BN -> ReLU -> max 3x3/2 pad 1 (floor) -> layer1..4 of
3, 4, 6, 3 bottlenecks (widths 64, 128, 256, 512, expansion 4); a bottleneck is
relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x)), with the stride in the
3x3 conv2 (Keras' own ``resnet50`` strides the first 1x1: a different function) and a
1x1 conv + BN shortcut when the shape changes. BatchNorm eps 1e-5. The output is the
2048-channel layer4 map. Input: RGB in [0, 1] normalised with ImageNet mean/std —
preprocessing ``torch_imagenet``.

Keras layer names are torchvision's module paths (``layer1.0.conv1``), so the state dict maps
one to one. Deviation: Keras BatchNormalization updates its moving variance with the biased
batch variance (PyTorch: unbiased); irrelevant with frozen BatchNorm.

Example:
    >>> from dmltf.models import backbones
    >>> m = backbones.build("resnet50_torch", (64, 64, 3))
    >>> tuple(m.output_shape[1:])
    (2, 2, 2048)
"""
import keras

from dmltf.models import backbones
from dmltf.models.reference_layers import Pool2D, batch_norm, conv

RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride)
EXPANSION = 4


def _bottleneck(x, planes, stride, name, downsample):
    shortcut = x
    y = conv(x, planes, 1, f"{name}.conv1", use_bias=False)
    y = keras.layers.ReLU(name=f"{name}.relu1")(batch_norm(y, f"{name}.bn1"))
    y = conv(y, planes, 3, f"{name}.conv2", strides=stride, padding=1, use_bias=False)
    y = keras.layers.ReLU(name=f"{name}.relu2")(batch_norm(y, f"{name}.bn2"))
    y = batch_norm(conv(y, planes * EXPANSION, 1, f"{name}.conv3", use_bias=False), f"{name}.bn3")
    if downsample:
        shortcut = conv(x, planes * EXPANSION, 1, f"{name}.downsample.0", strides=stride, use_bias=False)
        shortcut = batch_norm(shortcut, f"{name}.downsample.1")
    y = keras.layers.Add(name=f"{name}.add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}.relu3")(y)


def build_resnet_torch(input_shape, stages=RESNET50_STAGES, name="resnet50_torch"):
    inputs = keras.Input(input_shape)
    x = conv(inputs, 64, 7, "conv1", strides=2, padding=3, use_bias=False)
    x = keras.layers.ReLU(name="relu")(batch_norm(x, "bn1"))
    x = Pool2D("max", 3, 2, padding=1, name="maxpool")(x)
    channels = 64
    for i, (planes, blocks, stride) in enumerate(stages, start=1):
        for j in range(blocks):
            block_stride = stride if j == 0 else 1
            downsample = block_stride != 1 or channels != planes * EXPANSION
            x = _bottleneck(x, planes, block_stride, f"layer{i}.{j}", downsample)
            channels = planes * EXPANSION
    return keras.Model(inputs, x, name=name)


@backbones.register(
    "resnet50_torch",
    preprocessing="torch_imagenet",
    feature_dim=2048,
    image_size=224,
    weights_help="Convert torchvision's resnet50-*.pth with `python -m pretrained.resnet50_from_torch "
    "resnet50-0676ba61.pth resnet50_torch.weights.h5`, or PaddlePaddle's ResNet50_pretrained.tar (the same "
    "network) with `python -m pretrained.resnet50_from_paddle ResNet50_pretrained.tar resnet50_paddle.weights.h5` "
    "(see pretrained/README.md).",
)
def resnet50_torch(input_shape):
    return build_resnet_torch(input_shape)
