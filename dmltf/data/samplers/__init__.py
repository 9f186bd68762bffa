"""Batch samplers: which images make up each training batch of an epoch, resolved by name.

A sampler is a registered :class:`~dmltf.data.samplers.base.Sampler` subclass (one module
each); ``--batch_sampler`` names it, its own parameters are ``--sampler_<name>_<param>``
flags, and a method may declare its default (``Method.default_sampler``).

Example:
    >>> import numpy as np
    >>> from dmltf.data import ArraySplit, samplers
    >>> split = ArraySplit(np.zeros((12, 8, 8, 1), np.uint8), np.repeat([5, 6, 7], 4))
    >>> s = samplers.get("balanced", classes_per_batch=3, samples_per_class=2)
    >>> s.steps_per_epoch(split), s.batches(split, seed=0, epoch=0).shape
    (2, (2, 6))
"""
from dmltf.data.samplers.base import Sampler  # noqa: F401
from dmltf.registry import Registry, import_submodules

SAMPLERS = Registry("batch sampler")
register, names, get_class = SAMPLERS.register, SAMPLERS.names, SAMPLERS.lookup


def get(identifier, *args, **kwargs):
    """A sampler from its name and constructor arguments, or the object itself."""
    if isinstance(identifier, Sampler):
        return identifier
    return get_class(identifier)(*args, **kwargs)


# Each module registers what it defines when imported; a new one needs no edit here.
import_submodules(__name__, __path__)
