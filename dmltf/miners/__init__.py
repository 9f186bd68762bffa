"""Batch miners: which pairs or triplets of a batch a loss uses.

``dmltf.miners.get(name, **kwargs)`` builds one by snake_case name; ``names()`` lists them.

Example:
    >>> import numpy as np
    >>> from dmltf import miners
    >>> m = miners.get("semi_hard")
    >>> t = m(np.array([0, 0, 1, 1]), np.eye(4, dtype="float32"))
    >>> int(np.asarray(t.weight).sum())  # one triplet per positive pair
    4
"""
from dmltf.miners.base import Miner, Pairs, Triplets, label_masks, to_pairs, to_triplets  # noqa: F401

_REGISTRY = {}


def register(cls):
    """Class decorator: adds a miner to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def names():
    return sorted(_REGISTRY)


def get_class(name):
    if name not in _REGISTRY:
        raise ValueError(f"Unknown miner {name!r}; valid names: {', '.join(names())}")
    return _REGISTRY[name]


def get(identifier, **kwargs):
    """A miner from its name (with constructor kwargs), a serialized dict, or the object; None stays None."""
    if identifier is None or isinstance(identifier, Miner):
        return identifier
    if isinstance(identifier, dict):
        kwargs = {**identifier.get("config", {}), **kwargs}
        identifier = identifier["name"]
    return get_class(identifier)(**kwargs)


def serialize(miner):
    return None if miner is None else {"name": miner.name, "config": miner.get_config()}


# Registration happens on import of each module.
from dmltf.miners import (  # noqa: E402,F401
    all_triplets,
    batch_hard,
    distance_weighted,
    multi_similarity,
    pair_margin,
    semi_hard,
)
