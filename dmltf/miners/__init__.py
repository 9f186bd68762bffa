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
from dmltf.registry import Registry, import_submodules

MINERS = Registry("miner")
names, get_class = MINERS.names, MINERS.lookup


def register(cls):
    """Class decorator: adds a miner to the registry under ``cls.registry_name``."""
    return MINERS.add(cls.registry_name, cls)


def get(identifier, **kwargs):
    """A miner from its name (with constructor kwargs), a serialized dict, or the object; None stays None."""
    if identifier is None or isinstance(identifier, Miner):
        return identifier
    if isinstance(identifier, dict):
        kwargs = {**identifier.get("config", {}), **kwargs}
        identifier = identifier["name"]
    return get_class(identifier)(**kwargs)


def serialize(miner):
    return None if miner is None else {"name": miner.registry_name, "config": miner.get_config()}


# Each module registers what it defines when imported; a new one needs no edit here.
import_submodules(__name__, __path__)
