"""Layers shared by the embedding models: L2 normalisation, global pooling (avg, max, avg+max,
GeM) and the embedding head (Dense -> optional BatchNorm -> optional L2 normalisation).

A pooling spec (``--pooling``) is ``mode[:option=value,...]``, the options being the pieces
around the pooling that some recipes put between the trunk and the embedding Dense layer:

==================  ====================================================================
option              effect
==================  ====================================================================
``dropout=<rate>``  Dropout on the feature map before pooling (training only): shi510/dml-tf's
                    head ``Dropout(0.5) -> GlobalAveragePooling2D -> Dense`` (``avg:dropout=0.5``;
                    its HEAD version 0.3, with ``--embedding_bn`` after the Dense layer)
``layernorm=true``  LayerNorm without affine weights (eps 1e-5, PyTorch's) on the pooled feature:
                    ProxyNCA++'s ``Feat_resnet50_max_n`` (euwern/proxynca_pp ``networks.py``),
                    global max pooling -> LayerNorm(2048, elementwise_affine=False), before its
                    Linear(2048 -> 2048) (``max:layernorm=true`` with ``--embedding_dim=2048``)
==================  ====================================================================

Example:
    >>> import numpy as np
    >>> from dmltf.layers import GlobalPooling, EmbeddingHead
    >>> x = np.ones((2, 4, 4, 8), "float32")
    >>> tuple(GlobalPooling("avg+max")(x).shape)
    (2, 8)
    >>> tuple(EmbeddingHead(16)(np.ones((2, 8), "float32")).shape)
    (2, 16)
    >>> pool = GlobalPooling("max:layernorm=true")
    >>> pool.mode, pool.layernorm, pool.dropout
    ('max', True, 0.0)
"""
import keras
from keras import ops

from dmltf.distances import l2_normalize
from dmltf.registry import parse_spec

POOLINGS = ("avg", "max", "avg+max", "gem")
POOLING_OPTIONS = ("dropout", "layernorm")


def parse_pooling(spec):
    """(mode, {option: value}) from a pooling spec ``mode[:option=value,...]`` (see the module
    docstring); an unknown mode or option, or a bad value, is a ValueError naming the spec.

    >>> parse_pooling("avg:dropout=0.5")
    ('avg', {'dropout': 0.5})
    """
    def options_of(mode):
        if mode not in POOLINGS:
            raise ValueError(f"Unknown pooling {mode!r} (in {spec!r}); valid: {', '.join(POOLINGS)}")
        return POOLING_OPTIONS

    mode, options = parse_spec(spec, options_of, what="pooling spec", kind="option")
    return mode, {key: _option_value(key, value, spec) for key, value in options.items()}


def _option_value(key, value, spec):
    """A pooling option's value checked and typed: dropout a rate in [0, 1), layernorm a bool."""
    if key == "dropout":
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = -1.0
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"pooling spec {spec!r}: dropout={value!r} must be a rate in [0, 1)")
        return rate
    if isinstance(value, bool):
        return value
    if str(value).lower() not in ("true", "false"):
        raise ValueError(f"pooling spec {spec!r}: layernorm={value!r} must be true or false")
    return str(value).lower() == "true"


class SeededLayer(keras.layers.Layer):
    """A layer whose ``keras.random.SeedGenerator`` attributes' states are in its TensorFlow
    checkpoints: Keras lists them in ``variables`` only, and ``tf.train.Checkpoint`` saves and
    restores the children named here (each state under its attribute's name), so a resumed run
    continues the layer's draws."""

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        for name, value in vars(self).items():
            if isinstance(value, keras.random.SeedGenerator):
                children[f"{name}_state"] = value.state
        return children


@keras.saving.register_keras_serializable(package="dmltf")
class L2Normalize(keras.layers.Layer):
    """x / ||x|| along the last axis, computed and returned in float32, also under mixed
    precision: it is the embedding that losses, evaluation and exports read."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "dtype": "float32"})

    def call(self, x):
        return l2_normalize(ops.cast(x, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="dmltf")
class GlobalPooling(keras.layers.Layer):
    """Global pooling of an NHWC feature map, with the optional pieces of a pooling spec.

    ``avg+max`` sums average and max pooling (Proxy-Anchor's BN-Inception head, LM-Metric);
    ``gem`` is generalised-mean pooling (Radenovic et al. 2018) with a learnable exponent p.
    ``mode`` may be a whole spec (``"avg:dropout=0.5"``); ``dropout`` and ``layernorm`` given as
    arguments override its options. Dropout acts on every element of the feature map before
    pooling, as Keras' Dropout on dml-tf's 4-D trunk output; LayerNorm normalises the pooled
    feature over its channels: (f - mean) / sqrt(var + 1e-5), var the biased variance.
    """

    def __init__(self, mode="avg", gem_p=3.0, gem_eps=1e-6, dropout=None, layernorm=None, **kwargs):
        super().__init__(**kwargs)
        spec = mode
        mode, options = parse_pooling(spec)
        for key, value in (("dropout", dropout), ("layernorm", layernorm)):
            if value is not None:
                options[key] = _option_value(key, value, spec)
        self.mode, self.gem_p, self.gem_eps = mode, float(gem_p), float(gem_eps)
        self.dropout, self.layernorm = options.get("dropout", 0.0), options.get("layernorm", False)
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout") if self.dropout else None
        self.norm = (keras.layers.LayerNormalization(epsilon=1e-5, center=False, scale=False, name="layernorm")
                     if self.layernorm else None)

    def build(self, input_shape):
        if self.mode == "gem":
            self.p = self.add_weight(name="p", shape=(), initializer=keras.initializers.Constant(self.gem_p))
        if self.norm is not None:
            self.norm.build((input_shape[0], input_shape[-1]))

    def call(self, x, training=None):
        if self.dropout_layer is not None:
            x = self.dropout_layer(x, training=training)
        pooled = self._pool(x)
        return pooled if self.norm is None else self.norm(pooled)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def _pool(self, x):
        if self.mode == "avg":
            return ops.mean(x, axis=(1, 2))
        if self.mode == "max":
            return ops.max(x, axis=(1, 2))
        if self.mode == "avg+max":
            return ops.mean(x, axis=(1, 2)) + ops.max(x, axis=(1, 2))
        p = ops.cast(self.p, x.dtype)
        return ops.power(ops.mean(ops.power(ops.maximum(x, self.gem_eps), p), axis=(1, 2)), 1.0 / p)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "gem_p": self.gem_p, "gem_eps": self.gem_eps,
                "dropout": self.dropout, "layernorm": self.layernorm}


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
