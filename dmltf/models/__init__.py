"""Embedding models: a registry backbone, global pooling and an embedding head.

Example:
    >>> from dmltf.models import build_embedding_model
    >>> model = build_embedding_model("small_cnn", (8, 8, 1), embedding_dim=16)
    >>> model.output_shape
    (None, 16)
"""
import keras

from dmltf.layers import EmbeddingHead, GlobalPooling
from dmltf.models import backbones
from dmltf.models import bn_inception, glow, googlenet, resnet_torch  # noqa: F401  (register backbones, Glow layers)


def build_embedding_model(
    backbone,
    input_shape,
    *,
    pooling="avg",
    embedding_dim=512,
    embedding_bn=False,
    l2_normalize=True,
    backbone_weights=None,
    freeze_bn=False,
):
    """images -> backbone -> pooling -> head; layers named ``backbone``, ``pool``, ``head``."""
    trunk = backbones.build(backbone, input_shape, weights=backbone_weights)
    trunk.name = "backbone"  # one stable name for optimizer groups, whatever the backbone
    if freeze_bn:
        freeze_batchnorm(trunk)
    inputs = keras.Input(input_shape, name="images")
    features = GlobalPooling(pooling, name="pool")(trunk(inputs))
    outputs = EmbeddingHead(embedding_dim, batchnorm=embedding_bn, l2_normalize=l2_normalize, name="head")(features)
    return keras.Model(inputs, outputs, name="embedding_model")


def freeze_batchnorm(model):
    """Freeze every BatchNormalization layer: statistics and affine weights, as PyTorch's
    ``eval()`` plus ``requires_grad=False`` in the references. In Keras 3 a non-trainable BN
    layer also runs in inference mode."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def synchronize_batchnorm(model):
    """Make every BatchNormalization layer use global-batch statistics across replicas
    (Keras' ``synchronized=True``, TensorFlow backend), so N replicas normalise as one device."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
