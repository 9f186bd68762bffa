"""Pairwise distance and similarity matrices.

A distance object turns two embedding matrices ``x`` [B, D] and ``y`` [R, D] into a
[B, R] matrix. ``is_inverted`` tells whether larger means closer (similarities), so one loss
formula can serve both kinds through :meth:`Distance.closer` / :meth:`Distance.margin`.
Distances never normalise their inputs, ``cosine`` aside (it is a cosine similarity).

Example:
    >>> import numpy as np
    >>> from dmltf import distances
    >>> d = distances.get("euclidean")
    >>> x = np.array([[0.0, 0.0], [3.0, 4.0]], "float32")
    >>> np.asarray(d.pairwise(x, x)).round(3).tolist()
    [[0.0, 5.0], [5.0, 0.0]]
"""
from keras import ops

from dmltf.registry import Registry

# Below this squared distance the euclidean distance and its gradient are taken as 0, so
# identical embeddings (a sample with itself, a collapsed batch) never produce NaN gradients.
_SQRT_EPS = 1e-12


class Distance:
    """Base class: ``pairwise(x, y)`` returns a [len(x), len(y)] matrix."""

    name = None
    is_inverted = False  # True for similarities: larger means closer.

    def pairwise(self, x, y):
        raise NotImplementedError

    def __call__(self, x, y):
        return self.pairwise(x, y)

    def smallest_dist(self):
        """Sentinel that is farther than every real value (for masked minima / maxima)."""
        return -1e9 if self.is_inverted else 1e9

    def margin(self, closer, farther):
        """How much ``closer`` is closer than ``farther`` (positive when the order is right)."""
        return closer - farther if self.is_inverted else farther - closer

    def get_config(self):
        return {}

    def __repr__(self):
        return f"{type(self).__name__}()"


def _squared_norms(x):
    return ops.sum(ops.square(x), axis=-1)


class SquaredEuclidean(Distance):
    """||x - y||^2 via the Gram matrix, clipped at 0 against round-off."""

    name = "squared_euclidean"

    def pairwise(self, x, y):
        d = (
            ops.expand_dims(_squared_norms(x), 1)
            + ops.expand_dims(_squared_norms(y), 0)
            - 2.0 * ops.matmul(x, ops.transpose(y))
        )
        return ops.maximum(d, 0.0)


class Euclidean(Distance):
    """||x - y||, with a zero (not NaN) gradient where x == y."""

    name = "euclidean"

    def pairwise(self, x, y):
        d2 = SquaredEuclidean().pairwise(x, y)
        zero = d2 <= _SQRT_EPS
        d = ops.sqrt(ops.where(zero, ops.ones_like(d2), d2))
        return ops.where(zero, ops.zeros_like(d), d)


class Cosine(Distance):
    """Cosine similarity of the L2-normalised inputs (larger is closer)."""

    name = "cosine"
    is_inverted = True

    def pairwise(self, x, y):
        return ops.matmul(l2_normalize(x), ops.transpose(l2_normalize(y)))


class Dot(Distance):
    """Inner product x . y (larger is closer); inputs are used as given."""

    name = "dot"
    is_inverted = True

    def pairwise(self, x, y):
        return ops.matmul(x, ops.transpose(y))


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """x / max(||x||, sqrt(epsilon)): safe for zero rows."""
    norm2 = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(norm2, epsilon))


DISTANCES = Registry("distance")
for _cls in (Euclidean, SquaredEuclidean, Cosine, Dot):
    DISTANCES.add(_cls.name, _cls)
names = DISTANCES.names


def get(identifier):
    """A :class:`Distance` from its name, or the object itself."""
    if isinstance(identifier, Distance):
        return identifier
    if isinstance(identifier, dict):  # serialized form {"name": ...}
        identifier = identifier["name"]
    return DISTANCES.lookup(identifier)()


def serialize(distance):
    return {"name": get(distance).name}
