"""Named proxy initialisers, with PyTorch's fan conventions for a [num_classes, dim] tensor.

For a PyTorch weight of shape (C, D), fan_in = D and fan_out = C. Keras' own VarianceScaling
reads the first axis as fan_in, so the names here are resolved explicitly.
"""
import math

import keras

from dmltf.registry import Registry


@keras.saving.register_keras_serializable(package="dmltf")
class TorchKaiming(keras.initializers.Initializer):
    """torch.nn.init.kaiming_{normal,uniform}_ with leaky-ReLU slope ``a`` on a (C, D) tensor."""

    def __init__(self, mode="fan_in", distribution="normal", a=0.0, seed=None):
        self.mode, self.distribution, self.a, self.seed = mode, distribution, a, seed

    def __call__(self, shape, dtype=None):
        fan = shape[1] if self.mode == "fan_in" else shape[0]
        std = math.sqrt(2.0 / (1.0 + self.a**2)) / math.sqrt(fan)
        if self.distribution == "normal":
            return keras.random.normal(shape, stddev=std, dtype=dtype, seed=self.seed)
        bound = math.sqrt(3.0) * std
        return keras.random.uniform(shape, -bound, bound, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"mode": self.mode, "distribution": self.distribution, "a": self.a, "seed": self.seed}


INITIALIZERS = Registry("initializer")
for _name, _make in {
    "normal": lambda: keras.initializers.RandomNormal(stddev=1.0),
    # Proxy-Anchor: randn then kaiming_normal_(mode='fan_out').
    "kaiming_normal": lambda: TorchKaiming(mode="fan_out", distribution="normal"),
    # PyTorch's default Linear-style init, kaiming_uniform_(a=sqrt(5)) (SoftTriple, DRML).
    "kaiming_uniform": lambda: TorchKaiming(mode="fan_in", distribution="uniform", a=math.sqrt(5.0)),
    # kaiming_normal_(a=sqrt(5)), fan_in: DRML's branch proxies (MultiProxyCollector).
    "kaiming_normal_a_sqrt5": lambda: TorchKaiming(mode="fan_in", distribution="normal", a=math.sqrt(5.0)),
    "orthogonal": lambda: keras.initializers.Orthogonal(),
    # Paddle's fluid Xavier() (uniform), the arcmargin weight init; symmetric in the fans.
    "xavier_uniform": lambda: keras.initializers.GlorotUniform(),
    # ProxyNCA++ / dichotomies proxy-nca: randn(C, D) / 8.
    "normal_div8": lambda: keras.initializers.RandomNormal(stddev=0.125),
}.items():
    INITIALIZERS.add(_name, _make)
names = INITIALIZERS.names


def get(identifier):
    if not isinstance(identifier, str):
        return identifier
    return INITIALIZERS.lookup(identifier)()
