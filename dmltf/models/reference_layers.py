"""Layers with Caffe / PyTorch semantics, for backbones that must compute the same function
as their reference implementation (GoogLeNet from Caffe, BN-Inception and ResNet-50 from PyTorch).

- ``Pool2D``: PyTorch's ``MaxPool2d`` / ``AvgPool2d`` (= Caffe's pooling): symmetric padding and
  an optional ceil mode, which adds bottom/right padding so that
  ``out = ceil((in + 2p - k) / s) + 1`` (minus one if the last window would start beyond the
  left padding plus the image). Max pools pad with -inf; average pools count the padding in the
  divisor (``count_include_pad=True``) and refuse a ceil-mode overhang (never needed here).
- ``LocalResponseNorm``: across-channel LRN as Caffe and PyTorch define it,
  ``b_c = a_c / (k + alpha/size * sum_{|c'-c| <= size//2} a_c'^2) ** beta``.
- ``conv``, ``batch_norm``: explicit symmetric zero padding + VALID convolution (PyTorch / Caffe
  padding; TF's 'same' pads bottom/right first) and BatchNormalization with PyTorch's
  momentum convention converted to Keras'.

Deviation: ceil-mode pooling needs static spatial sizes (its padding is computed when the model
is built), so build GoogLeNet and BN-Inception with a fixed image size.

Example:
    >>> import numpy as np
    >>> from dmltf.models.reference_layers import Pool2D
    >>> tuple(Pool2D("max", 3, 2, ceil_mode=True)(np.zeros((1, 6, 6, 1), "float32")).shape)
    (1, 3, 3, 1)
"""
import keras
import tensorflow as tf
from keras import ops


def _pool_extra_padding(size, kernel, stride, padding, ceil_mode, layer_name):
    """Bottom/right padding beyond ``padding`` that PyTorch's ceil mode implies."""
    if not ceil_mode:
        return 0  # floor mode: the windows fit
    if size is None:
        raise ValueError(
            f"{layer_name}: ceil-mode pooling needs a static spatial size; build the backbone "
            "with a fixed image size (e.g. input_shape=(224, 224, 3))."
        )
    span = size + 2 * padding - kernel
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1  # PyTorch / Caffe: the last window must start inside the image or left padding
    return max((out - 1) * stride + kernel - (size + 2 * padding), 0)


@keras.saving.register_keras_serializable(package="dmltf")
class Pool2D(keras.layers.Layer):
    """Max or average pooling with PyTorch's ``padding`` and ``ceil_mode`` (NHWC)."""

    def __init__(self, mode, pool_size, strides, padding=0, ceil_mode=False, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "avg"):
            raise ValueError(f"Pool2D mode must be 'max' or 'avg', got {mode!r}")
        self.mode, self.pool_size, self.strides = mode, int(pool_size), int(strides)
        self.padding, self.ceil_mode = int(padding), bool(ceil_mode)

    def _paddings(self, shape):
        k, s, p = self.pool_size, self.strides, self.padding
        extra = [_pool_extra_padding(shape[i], k, s, p, self.ceil_mode, self.name) for i in (1, 2)]
        if self.mode == "avg" and any(extra):
            raise ValueError(f"{self.name}: ceil-mode overhang in average pooling is not supported")
        return [[0, 0], [p, p + extra[0]], [p, p + extra[1]], [0, 0]]

    def call(self, x):
        pads = self._paddings(x.shape)
        if any(a or b for a, b in pads):
            fill = float("-inf") if self.mode == "max" else 0.0
            x = ops.pad(x, pads, constant_values=fill)
        pool = ops.max_pool if self.mode == "max" else ops.average_pool
        return pool(x, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        pads = self._paddings(input_shape)
        k, s = self.pool_size, self.strides
        h, w = (None if input_shape[i] is None else (input_shape[i] + sum(pads[i]) - k) // s + 1 for i in (1, 2))
        return (input_shape[0], h, w, input_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "ceil_mode": self.ceil_mode,
        }


@keras.saving.register_keras_serializable(package="dmltf")
class LocalResponseNorm(keras.layers.Layer):
    """Caffe / PyTorch across-channel LRN (alpha is divided by ``size``).

    Uses ``tf.nn.local_response_normalization`` (keras.ops has no LRN), whose ``alpha`` is not
    divided by the window: TF's ``depth_radius=r, alpha=a`` equals ``size=2r+1, alpha=a*(2r+1)``.
    Computed in float32 and returned in the layer's compute dtype (half under mixed precision).
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        if size % 2 != 1:
            raise ValueError(f"LocalResponseNorm size must be odd, got {size}")
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def call(self, x):
        # In float32 under mixed precision: TF has no float16 LRN kernel on GPU nor a bfloat16 one on
        # CPU, and the summed squares of activations overflow float16 (max 65504).
        y = tf.nn.local_response_normalization(
            tf.cast(x, tf.float32), depth_radius=self.size // 2, bias=self.k, alpha=self.alpha / self.size,
            beta=self.beta)
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


def conv(x, filters, kernel, name, strides=1, padding=0, use_bias=True):
    """PyTorch/Caffe convolution: symmetric zero padding, then a VALID Conv2D named ``name``.

    At stride 1 with padding (kernel - 1) / 2 that is TF's 'same', used directly (faster)."""
    if strides == 1 and 2 * padding == kernel - 1:
        return keras.layers.Conv2D(filters, kernel, padding="same", use_bias=use_bias, name=name)(x)
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides, padding="valid", use_bias=use_bias, name=name)(x)


def batch_norm(x, name, epsilon=1e-5, torch_momentum=0.1):
    """BatchNormalization; PyTorch's running = (1-m)*running + m*batch is Keras momentum 1-m."""
    return keras.layers.BatchNormalization(momentum=1.0 - torch_momentum, epsilon=epsilon, name=name)(x)
