"""Triplet margin loss.

Reference: Schroff et al. 2015, "FaceNet". Per triplet (a, p, n):
``max(0, d(a, p) - d(a, n) + margin)``, or ``log(1 + exp(d(a, p) - d(a, n) + margin))`` with
``soft=True``; similarities use ``s(a, n) - s(a, p)``. Any miner works; pair miners are expanded
to all their triplets. Sample weights: each triplet weighs w_a w_p w_n.

``get("triplet", margin=1.0, distance="squared_euclidean", miner="semi_hard")`` is TF-contrib's
``triplet_semihard_loss`` (DVML's metric loss): mean over positive pairs, raw embeddings.

Example:
    >>> import numpy as np
    >>> from dmltf.losses import get
    >>> loss = get("triplet", margin=0.5)
    >>> x = np.array([[0.0], [0.2], [1.0]], "float32")
    >>> round(float(loss(np.array([0, 0, 1]), x)), 4)  # triplets (0,1,2): 0; (1,0,2): 0.2-0.8+0.5
    0.0
"""
from keras import ops

from dmltf.losses import register
from dmltf.losses.base import PairLoss
from dmltf.miners.base import gather_pairs


@register("triplet")
class TripletLoss(PairLoss):
    uses_triplets = True

    def __init__(self, margin=0.1, soft=False, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.soft = bool(soft)

    def pair_loss(self, mat, mined, distance, weights):
        ap = gather_pairs(mat, mined.anchor, mined.positive)
        an = gather_pairs(mat, mined.anchor, mined.negative)
        violation = self.margin - distance.margin(ap, an)
        losses = ops.softplus(violation) if self.soft else ops.relu(violation)
        return losses, mined.weight

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "soft": self.soft}
