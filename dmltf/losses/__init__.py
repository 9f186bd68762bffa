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
from dmltf.registry import Registry, import_submodules


def _serialisable(name, cls):
    cls.registry_name = name
    return keras.saving.register_keras_serializable(package="dmltf", name=name)(cls)


LOSSES = Registry("loss", on_register=_serialisable)
register, names, get_class = LOSSES.register, LOSSES.names, LOSSES.lookup


def get(identifier, **kwargs):
    """A loss from its name and constructor kwargs, from a ``get_config`` dict, or the object."""
    if isinstance(identifier, MetricLoss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    return get_class(identifier)(**kwargs)


# Each module registers what it defines when imported; a new one needs no edit here.
import_submodules(__name__, __path__)
