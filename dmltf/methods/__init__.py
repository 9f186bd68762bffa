"""Methods: whole training systems behind one contract (``Method``), resolved by name.

``get(name)`` returns the builder registered for a method; builders take the parsed flag
values (``config.Config``) and the dataset description and return a ``Method``.
"""
from dmltf.methods.base import MetricLearner, Method, OptimizerGroup, gather_global_batch  # noqa: F401

_REGISTRY = {}


def register(name):
    def wrap(builder):
        _REGISTRY[name] = builder
        return builder

    return wrap


def names():
    return sorted(_REGISTRY)


def get(name):
    if name not in _REGISTRY:
        raise ValueError(f"Unknown method {name!r}; valid names: {', '.join(names())}")
    return _REGISTRY[name]
