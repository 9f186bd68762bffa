"""The regularizer contract and the spec parser.

A regularizer is called as ``reg(rows, row_weights=None) -> scalar`` on rows [N, D] (embeddings
or class weights), in float32. Row-wise ones (``row_wise = True``) implement ``row_terms(rows)``
[N] and return their mean, weighted by ``row_weights`` (a zero-weight row contributes nothing;
all zero gives 0): PML's ``MeanReducer``. The others implement ``compute(rows)`` and refuse
row weights, since their terms couple the rows.
"""
from keras import ops

from dmltf import registry


def parse_spec(spec):
    """(name, {key: value}) from ``name[:key=value,...]`` (:func:`dmltf.registry.parse_spec`);
    numbers become int or float.

    >>> parse_spec("lp:p=1,power=2"), parse_spec("zero_mean")
    (('lp', {'p': 1, 'power': 2}), ('zero_mean', {}))
    """
    name, params = registry.parse_spec(spec, what="regularizer spec")
    return name, {key: registry.number_or_text(value) for key, value in params.items()}


class Regularizer:
    """Base of the regularizers (see the module docstring)."""

    row_wise = False

    def __call__(self, rows, row_weights=None):
        rows = ops.cast(rows, "float32")
        if not self.row_wise:
            if row_weights is not None:
                raise ValueError(f"regularizer {self.registry_name!r} couples the rows: it takes no row weights")
            return self.compute(rows)
        terms = self.row_terms(rows)
        if row_weights is None:
            return ops.mean(terms)
        row_weights = ops.cast(ops.reshape(row_weights, (-1,)), "float32")
        total = ops.sum(row_weights)
        return ops.sum(terms * row_weights) / ops.where(total > 0, total, 1.0)

    def row_terms(self, rows):
        raise NotImplementedError

    def compute(self, rows):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        params = ",".join(f"{k}={v}" for k, v in self.get_config().items())
        return self.registry_name + (f":{params}" if params else "")


def unit_rows(rows):
    """Rows scaled to unit L2 norm (a zero row stays zero), as PML's ``CosineSimilarity``."""
    norms = ops.sqrt(ops.sum(ops.square(rows), axis=1, keepdims=True))
    return rows / ops.maximum(norms, 1e-12)
