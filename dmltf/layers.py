"""Layers shared by the embedding models: L2 normalisation, global pooling (avg, max, avg+max,
GeM) and the embedding head (Dense -> optional BatchNorm -> optional L2 normalisation).

Example:
    >>> import numpy as np
    >>> from dmltf.layers import GlobalPooling, EmbeddingHead
    >>> x = np.ones((2, 4, 4, 8), "float32")
    >>> tuple(GlobalPooling("avg+max")(x).shape)
    (2, 8)
    >>> tuple(EmbeddingHead(16)(np.ones((2, 8), "float32")).shape)
    (2, 16)
"""
import keras
from keras import ops

from dmltf.distances import l2_normalize

POOLINGS = ("avg", "max", "avg+max", "gem")


@keras.saving.register_keras_serializable(package="dmltf")
class L2Normalize(keras.layers.Layer):
    """x / ||x|| along the last axis (computed in float32)."""

    def call(self, x):
        return ops.cast(l2_normalize(ops.cast(x, "float32")), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="dmltf")
class GlobalPooling(keras.layers.Layer):
    """Global pooling of an NHWC feature map.

    ``avg+max`` sums average and max pooling (Proxy-Anchor's BN-Inception head, LM-Metric);
    ``gem`` is generalised-mean pooling (Radenovic et al. 2018) with a learnable exponent p.
    """

    def __init__(self, mode="avg", gem_p=3.0, gem_eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise ValueError(f"Unknown pooling {mode!r}; valid: {', '.join(POOLINGS)}")
        self.mode, self.gem_p, self.gem_eps = mode, float(gem_p), float(gem_eps)

    def build(self, input_shape):
        if self.mode == "gem":
            self.p = self.add_weight(name="p", shape=(), initializer=keras.initializers.Constant(self.gem_p))

    def call(self, x):
        if self.mode == "avg":
            return ops.mean(x, axis=(1, 2))
        if self.mode == "max":
            return ops.max(x, axis=(1, 2))
        if self.mode == "avg+max":
            return ops.mean(x, axis=(1, 2)) + ops.max(x, axis=(1, 2))
        p = ops.cast(self.p, x.dtype)
        return ops.power(ops.mean(ops.power(ops.maximum(x, self.gem_eps), p), axis=(1, 2)), 1.0 / p)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "gem_p": self.gem_p, "gem_eps": self.gem_eps}


@keras.saving.register_keras_serializable(package="dmltf")
class EmbeddingHead(keras.layers.Layer):
    """Dense(embedding_dim) -> optional BatchNorm -> optional L2 normalisation.

    ``embedding_dim=0`` keeps the pooled feature as the embedding (PaddlePaddle's default).
    """

    def __init__(self, embedding_dim, batchnorm=False, l2_normalize=True, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim, self.batchnorm, self.l2_normalize = int(embedding_dim), bool(batchnorm), bool(l2_normalize)
        self.dense = keras.layers.Dense(self.embedding_dim, name="dense") if self.embedding_dim else None
        self.bn = keras.layers.BatchNormalization(name="bn") if self.batchnorm else None
        self.norm = L2Normalize(name="l2") if self.l2_normalize else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.dense, self.bn, self.norm):
            if layer is not None:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def call(self, x, training=None):
        if self.dense is not None:
            x = self.dense(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        if self.norm is not None:
            x = self.norm(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim or input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "batchnorm": self.batchnorm,
            "l2_normalize": self.l2_normalize,
        }
