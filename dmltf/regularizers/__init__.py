"""Regularizers of embeddings and of a loss's weights (pytorch-metric-learning 2.9's
``regularizers/``), resolved by snake_case name or by a spec ``name[:key=value,...]``.

A loss takes them as ``embedding_regularizer=`` / ``weight_regularizer=`` (see
``dmltf.losses.base.MetricLoss``); alone, a regularizer maps rows [N, D] to a scalar.
Row-wise regularizers (``lp``, ``zero_mean``) average per-row terms and take row weights;
the others couple the rows (class weights) and take none.

Example:
    >>> import numpy as np
    >>> from dmltf import regularizers
    >>> reg = regularizers.get("lp:p=1,power=2")
    >>> float(reg(np.array([[1.0, -2.0], [0.0, 1.0]], "float32")))
    5.0
"""
import keras

from dmltf.regularizers.base import Regularizer, parse_spec  # noqa: F401
from dmltf.registry import Registry, import_submodules


def _serialisable(name, cls):
    cls.registry_name = name
    return keras.saving.register_keras_serializable(package="dmltf_regularizers", name=name)(cls)


REGULARIZERS = Registry("regularizer", on_register=_serialisable)
register, names, get_class = REGULARIZERS.register, REGULARIZERS.names, REGULARIZERS.lookup


def get(identifier, **kwargs):
    """A regularizer from its name or spec ``name[:key=value,...]`` (plus constructor kwargs),
    from a ``get_config`` dict (``keras.saving.serialize_keras_object``), or the object; None
    and "" give None."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    name, params = parse_spec(identifier)
    if not name:
        return None
    return get_class(name)(**params, **kwargs)


def serialize(regularizer):
    """The ``get_config``-style dict of a regularizer (None stays None)."""
    return None if regularizer is None else keras.saving.serialize_keras_object(regularizer)


import_submodules(__name__, __path__)
