"""Methods: whole training systems behind one contract (``Method``), resolved by name.

Each method module registers its class on import (``@methods.register("name")``); this
package imports them all, so ``names()`` is complete after ``import dmltf.methods``. How a
registered method is built from the command line is in ``dmltf/methods/base.py``.

Example:
    >>> from dmltf import methods
    >>> {"dvml", "metric_learner"} <= set(methods.names())
    True
"""
from dmltf.methods.base import (  # noqa: F401
    LossRole,
    Method,
    OptimizerGroup,
    Parts,
    gather_global_batch,
    loss_scope,
    loss_weights_group,
)
from dmltf.registry import Registry, import_submodules

METHODS = Registry("method")
register, names, get_class = METHODS.register, METHODS.names, METHODS.lookup

# Each module registers what it defines when imported; a new one needs no edit here.
import_submodules(__name__, __path__)
from dmltf.methods.metric_learner import MetricLearner  # noqa: E402,F401
