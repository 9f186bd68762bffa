"""A weighted sum of losses, each part available by name.

Reference: pytorch-metric-learning 2.9 ``MultipleLosses``: ``sum_k weight_k loss_k(batch)``,
every part called with the same batch (and, here, the same references and sample weights).
``losses`` lists the parts as registry names (built with their defaults; ``num_classes`` and
``embedding_dim`` are passed on to the parts that take them), ``get_config`` dicts or loss
objects; ``weights`` (default: 1 each) are their factors. ``parts(...)`` returns the weighted
parts as a dict keyed by each part's registry name (``name_2``, ... for repeats), for logging;
calling the loss returns their sum. A miner or distance is a part's own (configure the part).

The parts' own weights (proxies, ...) train at ``lr_multiplier``; by default the parts'
common multiplier; parts with weights and different multipliers need an explicit one.

Deviation: PML's per-part miners are the parts' own miners here (each dmltf pair loss holds
its miner).

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> both = get("multiple_losses", losses=("contrastive", "ntxent"), weights=(1.0, 0.5))
    >>> x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    >>> y = np.array([0, 0, 1, 1, 2, 2])
    >>> parts = both.parts(y, x)
    >>> sorted(parts), bool(np.isclose(float(both(y, x)), float(parts["contrastive"] + parts["ntxent"])))
    (['contrastive', 'ntxent'], True)
"""
import keras

from dmltf import losses as losses_lib
from dmltf.losses import register
from dmltf.losses.base import MetricLoss
from dmltf.registry import constructor_parameters


def _build_part(part, num_classes, embedding_dim):
    if isinstance(part, str):
        cls = losses_lib.get_class(part)
        accepted = constructor_parameters(cls)
        given = {"num_classes": num_classes, "embedding_dim": embedding_dim}
        return cls(**{k: v for k, v in given.items() if k in accepted and v is not None})
    return losses_lib.get(part)


@register("multiple_losses")
class MultipleLosses(MetricLoss):
    def __init__(self, losses=("contrastive", "multi_similarity"), weights=(), num_classes=None, embedding_dim=None,
                 **kwargs):
        # Sub-layers are attributes only after Layer.__init__ (on PyTorch a layer is a torch Module).
        components = [_build_part(part, num_classes, embedding_dim) for part in losses]
        if not components:
            raise ValueError("multiple_losses needs at least one loss")
        weights = [float(w) for w in weights] or [1.0] * len(components)
        if len(weights) != len(components):
            raise ValueError(f"multiple_losses: {len(weights)} weights for {len(components)} losses")
        multipliers = {part.lr_multiplier for part in components if part.trainable_weights}
        if len(multipliers) > 1 and kwargs.get("lr_multiplier") is None:
            raise ValueError(f"multiple_losses: parts with weights train at different lr multipliers "
                             f"{sorted(multipliers)}; pass lr_multiplier")
        if multipliers:
            kwargs.setdefault("lr_multiplier", multipliers.pop())
        super().__init__(**kwargs)
        self.components, self.weights_ = components, weights
        names = [part.registry_name for part in self.components]
        self.part_names = [n if names[:i].count(n) == 0 else f"{n}_{names[:i].count(n) + 1}"
                           for i, n in enumerate(names)]

    def parts(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None,
              ref_sample_weight=None):
        """{part name: weight * part loss} for the batch."""
        return {name: w * part(labels, embeddings, ref_labels, ref_embeddings, sample_weight=sample_weight,
                               ref_sample_weight=ref_sample_weight)
                for name, w, part in zip(self.part_names, self.weights_, self.components)}

    def call(self, labels, embeddings, ref_labels=None, ref_embeddings=None, sample_weight=None,
             ref_sample_weight=None):
        return sum(self.parts(labels, embeddings, ref_labels, ref_embeddings, sample_weight,
                              ref_sample_weight).values())

    def get_config(self):
        return {**super().get_config(), "losses": [keras.saving.serialize_keras_object(p) for p in self.components],
                "weights": list(self.weights_)}
