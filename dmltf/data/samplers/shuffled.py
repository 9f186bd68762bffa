"""Plain shuffled batches (Fuel's ShuffledScheme, what the DVML reference trains on).

An epoch is a permutation of all N examples cut into ``N // (P * K)`` batches of P * K (the
remainder is dropped), so each example is used at most once per epoch; no class balancing, so
a replica's share of a batch holds arbitrary classes (groups of 1).

Example:
    >>> from dmltf.data.samplers.shuffled import random_batches
    >>> random_batches(10, 3, seed=0, epoch=0).shape
    (3, 3)
"""
import numpy as np

from dmltf.data import samplers
from dmltf.data.samplers.base import Sampler


@samplers.register("random")
class RandomSampler(Sampler):
    """Shuffled batches of ``classes_per_batch * samples_per_class`` images."""

    @property
    def group_size(self):
        return 1

    def steps_per_epoch(self, split):
        return split.num_examples // self.batch_size

    def check(self, split, num_shares=1):
        super().check(split, num_shares)
        if self.batch_size > split.num_examples:
            raise ValueError(f"a batch of {self.batch_size} exceeds the {split.num_examples} examples of split "
                             f"{split.name!r}")

    def batches(self, split, *, seed, epoch):
        return random_batches(split.num_examples, self.batch_size, seed=seed, epoch=epoch)


def random_batches(num_examples, batch_size, *, seed, epoch):
    """Plain shuffled batches (Fuel's ShuffledScheme, as the DVML reference): a permutation of
    all examples cut into ``steps_per_epoch`` batches of ``batch_size``, int64 [steps, batch_size];
    each example at most once per epoch (the remainder is dropped). No class balancing."""
    if int(batch_size) != batch_size or not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must be an integer in [1, {num_examples}], got {batch_size!r}")
    steps = int(num_examples) // int(batch_size)
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(int(num_examples))
    return order[:steps * batch_size].reshape(steps, batch_size).astype(np.int64)

