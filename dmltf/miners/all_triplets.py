"""Every valid pair ("all" miner): the label masks themselves.

Pair losses use the pairs directly; triplet losses expand them to every (a, p, n) with
y_a = y_p != y_n, which costs O(B * R^2) memory (a batch of 180 is fine, 1,024 is not:
use ``semi_hard`` or ``batch_hard`` there).
"""
from keras import ops

from dmltf import miners
from dmltf.miners.base import Miner, Pairs


@miners.register
class AllMiner(Miner):
    registry_name = "all"

    def mine(self, mat, pos, neg, distance):
        return Pairs(ops.cast(pos, "float32"), ops.cast(neg, "float32"))
