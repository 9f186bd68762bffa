"""Conditional Glow: LM-Metric's "contextual memory", a normalising flow p(r | e1).

Reference: ``Shiyang-Yan/LM-metric`` ``models/glow/glow.py``, ``act_norm.py``, ``coupling.py``,
``inv_conv.py``, ``util/optim_util.py`` (``NLLLoss``) and its use in ``architectures/resnet50.py``
(``Glow(num_channels=128, num_levels=2, num_steps=8, mode="sketch")``, ``sample(sigma=0.6)``),
built on ``chrischute/glow``; METHODS.md 2.2 item 6 and 2.5.

The map, for data x (the context r) and a condition c (the embedding e1), both one-channel images:
    y = (255 x + u) / 256, u ~ U[0, 1)                    dequantisation
    y' = logit((1 + b (2 y - 1)) / 2), b = 0.95           log-det: sum softplus(y') + softplus(-y') + log b
    squeeze 2x2; then num_levels levels, each of num_steps steps
        ActNorm -> invertible 1x1 conv -> affine coupling conditioned on c (squeezed alike)
    and, between levels, squeeze 2x2, split the channels in halves and recurse on the first
    z = the result unsqueezed to the data shape
    nll = -(sum_d log N(z_d; 0, 1) - D log 256 + log|det dz/dy|)      per sample (``NLLLoss(k=256)``;
          the reference's loss is the mean over the batch, in nats: it divides by nothing)
    sample(c) = sigmoid(flow^-1(T eps, c)), eps ~ N(0, I), T = 0.6
The coupling splits its input into (x_change, x_id) (first, second channel half), computes
(s, t) = NN(x_id, c) as interleaved output channels (s = even, t = odd), s <- scale * tanh(s) with
a learnable per-channel scale (initialised to 1) and maps x_change -> (x_change + t) exp(s). NN:
    BN(x_id) -> conv3x3 + condconv3x3(c) -> ReLU -> conv3x3 + condconv3x3(c) -> BN -> ReLU
    -> conv1x1 + condconv1x1(c) -> BN -> ReLU -> conv3x3 (with bias, zero-initialised)
The first BN (``in_norm``) is in the reference's ``NN.forward`` although METHODS.md 2.2 omits it.
Conv weights ~ N(0, 0.05^2) without bias, as the reference; BatchNorm momentum 0.9 (PyTorch 0.1)
and epsilon 1e-5 (PyTorch's defaults).

Layout: NHWC. PyTorch's (B, 1, 16, 32) NCHW is (B, 16, 32, 1) here (``image_shape``): reshape the
512-vector row-major to (16, 32, 1), as the reference's ``view(-1, 1, 16, 32)``. The squeeze puts
input channel k, row offset i and column offset j at output channel 4 k + 2 i + j, the
reference's order (not ``tf.nn.space_to_depth``'s), and channel splits and the s/t interleave use
the same channel indices, so a weight port is possible: PyTorch conv kernels (out, in, kh, kw)
are Keras (kh, kw, in, out); the 1x1 invertible conv keeps PyTorch's (out, in) matrix; ActNorm's
(1, C, 1, 1) bias and logs and the coupling's (C, 1, 1) scale are vectors of C.

Modes (``training``, a Python bool): True is the reference's ``model.train()``: the coupling
BatchNorms use batch statistics and update their moving averages, and an ActNorm that is not yet
initialised takes its data-dependent initialisation from this batch; False is ``model.eval()``.
LM-Metric runs the flow in training mode for the NLL and for the training-time sample, and in
evaluation mode at test time.

ActNorm initialisation under tf.distribute: the statistics are those of the *global* batch
(per-channel sums all-reduced over the replicas), so N replicas initialise exactly as one device
on the whole batch would, and every replica holds the same values. Because a cross-replica
reduction may not sit inside a ``tf.cond``, the statistics are computed on every training call
and written through ``where(initialized, current, data_init)``; the extra cost is a few
per-channel reductions. The ``initialized`` flag is a float variable (as the reference's buffer)
and is checkpointed, so a restored flow does not re-initialise. The coupling BatchNorms follow
Keras: per-replica statistics unless ``synchronized_batchnorm=True`` (global-batch statistics, as
the reference's single GPU). Create (or ``build()``) the layer inside the strategy's scope.

Randomness: the dequantisation noise and the sampling noise are, in this order of precedence,
passed in (``noise=``), drawn statelessly from a ``seed=`` (shape-(2,) integer tensor, e.g.
(seed, step)), or drawn from the layer's own ``keras.random.SeedGenerator`` (seeded by ``seed``
at construction). Under a MirroredStrategy the layer's generator draws the same noise on every
replica: pass ``seed=`` (with the replica id folded in) or ``noise=`` there for independent draws.
``seed`` also seeds the weight initialisers, each with its own offset.

Deviations from the reference: the noise sources above (the reference uses the global torch RNG);
the reference checks 0 <= x <= 1 at run time, this checks shapes only; ActNorm initialises only
in the forward direction (the reference would also do it from a first reverse call in training
mode, which LM-Metric never makes, since its NLL forward always comes first); Keras' BatchNorm
keeps the biased batch variance in its moving average (PyTorch the unbiased one); the random
orthogonal 1x1 conv initialisation is Keras' ``Orthogonal`` (QR of a Gaussian with the sign
correction) instead of the reference's unsigned NumPy QR. ``sample(deterministic=True)`` (z = 0)
is an addition for evaluation (METHODS.md 2.5 [I]).

Example:
    >>> import numpy as np
    >>> from dmltf.models.glow import ConditionalGlow
    >>> glow = ConditionalGlow(num_channels=8, num_levels=1, num_steps=2, image_shape=(4, 4, 1))
    >>> x = np.full((2, 4, 4, 1), 0.5, "float32")
    >>> tuple(glow.nll(x, x, training=True).shape)
    (2,)
    >>> tuple(glow.sample(x, deterministic=True).shape)
    (2, 4, 4, 1)
"""
import math

import keras
import tensorflow as tf
from keras import ops

from dmltf.layers import SeededLayer

BN_MOMENTUM = 0.9  # PyTorch BatchNorm2d momentum 0.1
BN_EPSILON = 1e-5  # PyTorch BatchNorm2d eps
CONV_INIT_STDDEV = 0.05  # the reference's nn.init.normal_(weight, 0., 0.05)


def squeeze2x2(x):
    """(B, H, W, C) -> (B, H/2, W/2, 4C), channel 4 k + 2 i + j = pixel (2h + i, 2w + j) of channel k."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4))
    return ops.reshape(x, (-1, h // 2, w // 2, 4 * c))


def unsqueeze2x2(x):
    """The inverse of ``squeeze2x2``."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h, w, c // 4, 2, 2))
    x = ops.transpose(x, (0, 1, 4, 2, 5, 3))
    return ops.reshape(x, (-1, 2 * h, 2 * w, c // 4))


def _global_channel_mean(x):
    """Per-channel mean over batch and pixels; over the global batch inside a replica context."""
    total = ops.sum(x, axis=(0, 1, 2))
    count = ops.cast(ops.shape(x)[0] * x.shape[1] * x.shape[2], x.dtype)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, [total, count])
    return total / count


@keras.saving.register_keras_serializable(package="dmltf")
class ActNorm(keras.layers.Layer):
    """y = (x + bias) exp(logs) per channel; log-det H W sum(logs) (``act_norm.py``).

    The first training call sets bias = -mean(x), logs = log(scale / (std(x) + 1e-6)) over batch
    and pixels (the global batch under tf.distribute), then sets ``initialized`` to 1.
    """

    def __init__(self, scale=1.0, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.eps = float(scale), float(eps)

    def build(self, input_shape):
        channels = input_shape[-1]
        # "mean" aggregation: replicas may write these in a replica context (all hold equal values).
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros", aggregation="mean")
        self.logs = self.add_weight(name="logs", shape=(channels,), initializer="zeros", aggregation="mean")
        self.initialized = self.add_weight(name="initialized", shape=(), initializer="zeros", trainable=False,
                                           aggregation="mean")

    def _initialize_from(self, x):
        x = ops.stop_gradient(x)
        bias = -_global_channel_mean(x)
        std = ops.sqrt(_global_channel_mean(ops.square(x + bias)))
        logs = ops.log(self.scale / (std + self.eps))
        done = self.initialized > 0.5
        self.bias.assign(ops.where(done, self.bias, bias))
        self.logs.assign(ops.where(done, self.logs, logs))
        self.initialized.assign(ops.ones_like(self.initialized))

    def log_det(self, x):
        return ops.sum(self.logs) * (x.shape[1] * x.shape[2])

    def forward(self, x, training=False):
        if training:
            self._initialize_from(x)
        return (x + self.bias) * ops.exp(self.logs), self.log_det(x)

    def inverse(self, y):
        return y * ops.exp(-self.logs) - self.bias, -self.log_det(y)

    def call(self, x, training=False):
        return self.forward(x, training=training)[0]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "eps": self.eps}


@keras.saving.register_keras_serializable(package="dmltf")
class InvertibleConv1x1(keras.layers.Layer):
    """y = W x at every pixel, W random orthogonal at init; log-det H W log|det W| (``inv_conv.py``).

    ``weight`` is PyTorch's (out, in) matrix; the inverse inverts it in float64 as the reference.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed

    def build(self, input_shape):
        channels = input_shape[-1]
        self.weight = self.add_weight(name="weight", shape=(channels, channels),
                                      initializer=keras.initializers.Orthogonal(seed=self.seed))

    def log_det(self, x):
        return ops.slogdet(self.weight)[1] * (x.shape[1] * x.shape[2])

    def forward(self, x):
        return ops.matmul(x, ops.transpose(self.weight)), self.log_det(x)

    def inverse(self, y):
        weight_inverse = ops.cast(ops.inv(ops.cast(self.weight, "float64")), y.dtype)
        return ops.matmul(y, ops.transpose(weight_inverse)), -self.log_det(y)

    def call(self, x):
        return self.forward(x)[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="dmltf")
class ConditionalCoupling(keras.layers.Layer):
    """Affine coupling conditioned on c (``coupling.py`` ``Coupling`` and ``NN``); see the module
    docstring. ``build((x_shape, cond_shape))``; ``forward``/``inverse`` return the per-sample log-det."""

    def __init__(self, mid_channels, seed=None, synchronized_batchnorm=False, **kwargs):
        super().__init__(**kwargs)
        self.mid_channels, self.seed = int(mid_channels), seed
        self.synchronized_batchnorm = bool(synchronized_batchnorm)

    def _conv(self, filters, kernel_size, offset, name):
        seed = None if self.seed is None else self.seed + offset
        initializer = keras.initializers.RandomNormal(0.0, CONV_INIT_STDDEV, seed)
        return keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=name,
                                   kernel_initializer=initializer, dtype=self.dtype_policy)

    def build(self, input_shape):
        x_shape, cond_shape = input_shape
        half = x_shape[-1] // 2
        mid = self.mid_channels
        bn = dict(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=self.synchronized_batchnorm,
                  dtype=self.dtype_policy)
        self.in_norm = keras.layers.BatchNormalization(name="in_norm", **bn)
        self.in_conv = self._conv(mid, 3, 0, "in_conv")
        self.in_condconv = self._conv(mid, 3, 1, "in_condconv")
        self.mid_conv1 = self._conv(mid, 3, 2, "mid_conv1")
        self.mid_condconv1 = self._conv(mid, 3, 3, "mid_condconv1")
        self.mid_norm = keras.layers.BatchNormalization(name="mid_norm", **bn)
        self.mid_conv2 = self._conv(mid, 1, 4, "mid_conv2")
        self.mid_condconv2 = self._conv(mid, 1, 5, "mid_condconv2")
        self.out_norm = keras.layers.BatchNormalization(name="out_norm", **bn)
        self.out_conv = keras.layers.Conv2D(2 * half, 3, padding="same", name="out_conv", dtype=self.dtype_policy,
                                            kernel_initializer="zeros", bias_initializer="zeros")
        id_shape = (*x_shape[:-1], half)
        mid_shape = (*x_shape[:-1], mid)
        self.in_norm.build(id_shape)
        self.in_conv.build(id_shape)
        for conv in (self.in_condconv, self.mid_condconv1, self.mid_condconv2):
            conv.build(cond_shape)
        for layer in (self.mid_conv1, self.mid_norm, self.mid_conv2, self.out_norm, self.out_conv):
            layer.build(mid_shape)
        self.scale = self.add_weight(name="scale", shape=(half,), initializer="ones")

    def scale_and_shift(self, x_id, cond, training=False):
        """(s, t), each shaped as x_id; s already squashed to scale * tanh(s)."""
        h = self.in_norm(x_id, training=training)
        h = ops.relu(self.in_conv(h) + self.in_condconv(cond))
        h = ops.relu(self.mid_norm(self.mid_conv1(h) + self.mid_condconv1(cond), training=training))
        h = ops.relu(self.out_norm(self.mid_conv2(h) + self.mid_condconv2(cond), training=training))
        st = self.out_conv(h)
        return self.scale * ops.tanh(st[..., 0::2]), st[..., 1::2]

    def forward(self, x, cond, training=False):
        x_change, x_id = ops.split(x, 2, axis=-1)
        s, t = self.scale_and_shift(x_id, cond, training)
        y = ops.concatenate([(x_change + t) * ops.exp(s), x_id], axis=-1)
        return y, ops.sum(s, axis=(1, 2, 3))

    def inverse(self, y, cond, training=False):
        y_change, x_id = ops.split(y, 2, axis=-1)
        s, t = self.scale_and_shift(x_id, cond, training)
        x = ops.concatenate([y_change * ops.exp(-s) - t, x_id], axis=-1)
        return x, -ops.sum(s, axis=(1, 2, 3))

    def get_config(self):
        return {**super().get_config(), "mid_channels": self.mid_channels, "seed": self.seed,
                "synchronized_batchnorm": self.synchronized_batchnorm}


@keras.saving.register_keras_serializable(package="dmltf")
class ConditionalGlow(SeededLayer):
    """LM-Metric's conditional Glow; see the module docstring.

    Args:
        num_channels: hidden channels of the coupling networks (the reference's 128).
        num_levels, num_steps: levels and flow steps per level (2 and 8).
        image_shape: (H, W, C) of the data and of the condition; H and W divisible by 2^num_levels.
        bound: the logit pre-processing bound (0.95).
        k: discrete values per input dimension in the NLL (256).
        seed: integer seed of the weight initialisers and of the layer's noise generator.
        synchronized_batchnorm: coupling BatchNorms use global-batch statistics across replicas
            (Keras' ``synchronized``), as the reference's single GPU; False: per-replica statistics
            and moving averages (each replica keeps its own; a checkpoint stores the first's).

    ``forward(x, cond, training, noise, seed, dequantize)`` -> (z, log-det) with x in (0, 1);
    ``inverse(z, cond, training)`` -> sigmoid of the reversed flows (the reference's reverse pass
    plus ``sample``'s sigmoid: it does not undo the bound, so inverse(forward(x)) is
    (1 + b (2 y - 1)) / 2 with y the dequantised x); ``flow_forward``/``flow_inverse`` are the
    exact bijection between logit-space y' and z; ``nll`` the per-sample NLL; ``sample`` draws
    x ~ p(x | cond). Calling the layer is ``forward``.
    """

    def __init__(self, num_channels=128, num_levels=2, num_steps=8, image_shape=(16, 32, 1), bound=0.95,
                 k=256, seed=0, synchronized_batchnorm=False, **kwargs):
        # float32 whatever the global policy: the log-dets sum hundreds of terms.
        super().__init__(**{**kwargs, "dtype": "float32"})
        self.num_channels, self.num_levels, self.num_steps = int(num_channels), int(num_levels), int(num_steps)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.bound, self.k, self.seed = float(bound), int(k), seed
        self.synchronized_batchnorm = bool(synchronized_batchnorm)
        if len(self.image_shape) != 3:
            raise ValueError(f"dmltf/models/glow.py: image_shape must be (H, W, C), got {image_shape!r}")
        if self.num_levels < 1 or self.num_steps < 1:
            raise ValueError(f"dmltf/models/glow.py: num_levels and num_steps must be >= 1, "
                             f"got {num_levels} and {num_steps}")
        factor = 2 ** self.num_levels
        if self.image_shape[0] % factor or self.image_shape[1] % factor:
            raise ValueError(f"dmltf/models/glow.py: image_shape {self.image_shape} must have H and W divisible "
                             f"by 2^num_levels = {factor} (one 2x2 squeeze per level)")
        if not 0.0 < self.bound < 1.0:
            raise ValueError(f"dmltf/models/glow.py: bound must lie in (0, 1), got {bound}")
        self.noise_generator = keras.random.SeedGenerator(seed)
        # One attribute per layer: TensorFlow checkpoints follow attributes, not Keras' tracked
        # lists, and must hold each step's non-trainable state (ActNorm's flag, BatchNorm statistics).
        offset = 0 if seed is None else int(seed) * 1000
        for level in range(self.num_levels):
            for step in range(self.num_steps):
                unique = None if seed is None else offset + 10 * (level * self.num_steps + step)
                name = f"level{level}_step{step}"
                setattr(self, f"{name}_actnorm", ActNorm(name=f"{name}_actnorm", dtype="float32"))
                setattr(self, f"{name}_invconv", InvertibleConv1x1(seed=unique, name=f"{name}_invconv",
                                                                   dtype="float32"))
                setattr(self, f"{name}_coupling", ConditionalCoupling(
                    self.num_channels, seed=None if unique is None else unique + 1,
                    synchronized_batchnorm=self.synchronized_batchnorm, name=f"{name}_coupling", dtype="float32"))

    @property
    def steps(self):
        """Per level: [(ActNorm, InvertibleConv1x1, ConditionalCoupling)] * num_steps."""
        return [[tuple(getattr(self, f"level{level}_step{step}_{part}") for part in ("actnorm", "invconv", "coupling"))
                 for step in range(self.num_steps)] for level in range(self.num_levels)]

    @property
    def num_dims(self):
        return math.prod(self.image_shape)

    def build(self, x_shape=None, cond_shape=None):
        h, w, c = self.image_shape
        x_shape, cond_shape = (None, h // 2, w // 2, 4 * c), (None, h // 2, w // 2, 4 * c)
        for level_steps in self.steps:
            for actnorm, invconv, coupling in level_steps:
                actnorm.build(x_shape)
                invconv.build(x_shape)
                coupling.build((x_shape, cond_shape))
            _, h, w, c = x_shape
            x_shape = (None, h // 2, w // 2, 2 * c)  # squeeze (4c), keep half
            _, h, w, kc = cond_shape
            cond_shape = (None, h // 2, w // 2, 4 * kc)
        self.built = True

    def _check(self, name, tensor):
        if not self.built:
            self.build()
        tensor = ops.convert_to_tensor(tensor, "float32")
        if tuple(tensor.shape[1:]) != self.image_shape:
            raise ValueError(f"dmltf/models/glow.py: ConditionalGlow {name} must have shape (batch, "
                             f"{', '.join(map(str, self.image_shape))}), got {tuple(tensor.shape)}")
        return tensor

    def _uniform(self, shape, seed):
        if seed is not None:
            return tf.random.stateless_uniform(shape, seed)  # TF op: keras.random takes no tensor seed
        return keras.random.uniform(shape, seed=self.noise_generator)

    def _normal(self, shape, seed):
        if seed is not None:
            return tf.random.stateless_normal(shape, seed)
        return keras.random.normal(shape, seed=self.noise_generator)

    def preprocess(self, x, noise=None, seed=None, dequantize=True):
        """x in [0, 1] -> (logit-space y', per-sample log-det of y -> y') (``Glow._pre_process``).

        ``dequantize``: y = (255 x + u) / 256 with u = ``noise`` (in [0, 1)), or drawn from ``seed``
        or the layer's generator; False takes x as already continuous (y = x).
        """
        x = self._check("x", x)
        if dequantize:
            u = self._uniform(ops.shape(x), seed) if noise is None else self._check("noise", noise)
            x = (255.0 * x + u) / 256.0
        p = (1.0 + self.bound * (2.0 * x - 1.0)) / 2.0
        y = ops.log(p) - ops.log(1.0 - p)
        log_det = ops.softplus(y) + ops.softplus(-y) - ops.softplus(math.log(1.0 - self.bound) - math.log(self.bound))
        return y, ops.sum(log_det, axis=(1, 2, 3))

    def _levels_forward(self, level, x, cond, log_det, training):
        for actnorm, invconv, coupling in self.steps[level]:
            x, step_log_det = actnorm.forward(x, training)
            log_det = log_det + step_log_det
            x, step_log_det = invconv.forward(x)
            log_det = log_det + step_log_det
            x, step_log_det = coupling.forward(x, cond, training)
            log_det = log_det + step_log_det
        if level + 1 < self.num_levels:
            x_next, x_split = ops.split(squeeze2x2(x), 2, axis=-1)
            x_next, log_det = self._levels_forward(level + 1, x_next, squeeze2x2(cond), log_det, training)
            x = unsqueeze2x2(ops.concatenate([x_next, x_split], axis=-1))
        return x, log_det

    def _levels_inverse(self, level, z, cond, log_det, training):
        if level + 1 < self.num_levels:
            z_next, z_split = ops.split(squeeze2x2(z), 2, axis=-1)
            z_next, log_det = self._levels_inverse(level + 1, z_next, squeeze2x2(cond), log_det, training)
            z = unsqueeze2x2(ops.concatenate([z_next, z_split], axis=-1))
        for actnorm, invconv, coupling in reversed(self.steps[level]):
            z, step_log_det = coupling.inverse(z, cond, training)
            log_det = log_det + step_log_det
            z, step_log_det = invconv.inverse(z)
            log_det = log_det + step_log_det
            z, step_log_det = actnorm.inverse(z)
            log_det = log_det + step_log_det
        return z, log_det

    def flow_forward(self, y, cond, training=False):
        """Logit-space y' -> (z, per-sample log|det dz/dy'|): the flows only, no pre-processing."""
        y, cond = self._check("y", y), self._check("cond", cond)
        z, log_det = self._levels_forward(0, squeeze2x2(y), squeeze2x2(cond), ops.zeros_like(y[:, 0, 0, 0]), training)
        return unsqueeze2x2(z), log_det

    def flow_inverse(self, z, cond, training=False):
        """z -> (logit-space y', per-sample log|det dy'/dz|): the exact inverse of ``flow_forward``."""
        z, cond = self._check("z", z), self._check("cond", cond)
        y, log_det = self._levels_inverse(0, squeeze2x2(z), squeeze2x2(cond), ops.zeros_like(z[:, 0, 0, 0]), training)
        return unsqueeze2x2(y), log_det

    def forward(self, x, cond, training=False, noise=None, seed=None, dequantize=True):
        """x in [0, 1] -> (z, per-sample log-det of pre-processing and flows), as ``Glow.forward``."""
        y, log_det = self.preprocess(x, noise=noise, seed=seed, dequantize=dequantize)
        z, flow_log_det = self.flow_forward(y, cond, training)
        return z, log_det + flow_log_det

    def inverse(self, z, cond, training=False):
        """z -> sigmoid(flow^-1(z)) in (0, 1): the reference's reverse pass then ``sample``'s sigmoid."""
        return ops.sigmoid(self.flow_inverse(z, cond, training)[0])

    def nll_from_latent(self, z, log_det):
        """-(sum_d log N(z_d; 0, 1) - D log k + log_det) per sample (``NLLLoss.forward`` before its mean)."""
        prior = ops.sum(-0.5 * (ops.square(z) + math.log(2.0 * math.pi)), axis=(1, 2, 3))
        return -(prior - math.log(self.k) * self.num_dims + log_det)

    def nll(self, x, cond, training=False, noise=None, seed=None, dequantize=True, stop_input_gradient=True):
        """Per-sample NLL in nats of x given cond; its batch mean is the reference's loss.

        ``stop_input_gradient``: LM-Metric detaches both inputs, so the NLL trains the flow only.
        """
        if stop_input_gradient:
            x, cond = ops.stop_gradient(x), ops.stop_gradient(cond)
        z, log_det = self.forward(x, cond, training=training, noise=noise, seed=seed, dequantize=dequantize)
        return self.nll_from_latent(z, log_det)

    def sample(self, cond, temperature=0.6, training=False, noise=None, seed=None, deterministic=False):
        """x = sigmoid(flow^-1(temperature * eps, cond)), eps ~ N(0, I) of the data shape.

        ``noise`` is eps itself (standard normal); ``deterministic=True`` uses z = 0 instead.
        Gradients flow into ``cond`` and into the flow weights.
        """
        cond = self._check("cond", cond)
        if deterministic:
            z = ops.zeros_like(cond)
        else:
            eps = self._normal(ops.shape(cond), seed) if noise is None else self._check("noise", noise)
            z = temperature * eps
        return self.inverse(z, cond, training=training)

    def call(self, x, cond, training=False, dequantize=True):
        return self.forward(x, cond, training=bool(training), dequantize=dequantize)

    def compute_output_spec(self, x, cond, training=False, dequantize=True):
        return (keras.KerasTensor(x.shape, "float32"), keras.KerasTensor(x.shape[:1], "float32"))

    def get_config(self):
        return {
            **super().get_config(),
            "num_channels": self.num_channels,
            "num_levels": self.num_levels,
            "num_steps": self.num_steps,
            "image_shape": list(self.image_shape),
            "bound": self.bound,
            "k": self.k,
            "seed": self.seed,
            "synchronized_batchnorm": self.synchronized_batchnorm,
        }
