"""Metric-learning losses: one module per loss family, resolved by snake_case name.

Example:
    >>> import numpy as np
    >>> from dmltf import losses
    >>> loss = losses.get("triplet", margin=1.0, miner="semi_hard", distance="squared_euclidean")
    >>> x = np.array([[0, 0], [0, 1], [3, 0], [3, 1]], "float32")
    >>> float(loss(np.array([0, 0, 1, 1]), x))
    0.0
"""
import keras

from dmltf.losses.base import MetricLoss, PairLoss, ProxyLoss, reduce  # noqa: F401

_REGISTRY = {}


def register(name):
    """Class decorator: registers a loss under ``name`` and with Keras serialization."""

    def wrap(cls):
        cls.registry_name = name
        _REGISTRY[name] = keras.saving.register_keras_serializable(package="dmltf", name=name)(cls)
        return cls

    return wrap


def names():
    """Registered loss names."""
    return sorted(_REGISTRY)


def get_class(name):
    if name not in _REGISTRY:
        raise ValueError(f"Unknown loss {name!r}; valid names: {', '.join(names())}")
    return _REGISTRY[name]


def get(identifier, **kwargs):
    """A loss from its name and constructor kwargs, from a ``get_config`` dict, or the object."""
    if isinstance(identifier, MetricLoss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    return get_class(identifier)(**kwargs)


# Registration happens on import of each module.
from dmltf.losses import (  # noqa: E402,F401
    adapted_triplet,
    angular,
    arcface,
    circle,
    contrastive,
    cosface,
    eml,
    generalized_lifted_structure,
    histogram,
    lifted_structure,
    margin,
    margin_sample_mining,
    multi_similarity,
    normalized_softmax,
    npair,
    proxy_anchor,
    proxy_nca,
    proxy_nca_pp,
    quadruplet,
    smooth_ap,
    soft_triple,
    softmax,
    triplet,
    xbm,
)
