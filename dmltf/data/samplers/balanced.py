"""Class-balanced batch sampler: P classes x K images per batch (MPerClass / PK sampling).

Definition of an epoch: ``steps_per_epoch = max(1, N // (P * K))`` batches, where N is the
number of examples of the split, so one epoch draws as many images as the split holds
(rounded down to whole batches). Batches are drawn independently of any previous epoch; the
whole epoch is a pure function of (labels, P, K, seed, epoch).

How one epoch is drawn (numpy ``Generator`` seeded with ``[seed, epoch]``):

* classes: walk a shuffled cycle of all classes, P at a time; when fewer than P remain in
  the cycle, they are taken with the first classes of a new shuffled cycle that excludes them
  (so a batch never repeats a class, and every class is used once per cycle);
* images of a class with n >= K images: the next K of a shuffled cycle of its images (distinct
  within a batch; a cycle's remainder of < K images is dropped when the class reshuffles);
* images of a class with n < K images (singletons included): all n images, then K - n drawn
  with replacement from them.

Batches are laid out class group after class group: indices [j*K, (j+1)*K) share a class.
So when P is divisible by the number of replicas R, each replica's contiguous share of P*K/R
examples holds P/R whole class groups.

Example:
    >>> import numpy as np
    >>> from dmltf.data.samplers.balanced import balanced_batches
    >>> labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    >>> b = balanced_batches(labels, classes_per_batch=2, samples_per_class=2, seed=0, epoch=0)
    >>> b.shape, labels[b[0]].reshape(2, 2)[:, 0].tolist() == labels[b[0]].reshape(2, 2)[:, 1].tolist()
    ((2, 4), True)
"""
import numpy as np

from dmltf.data import samplers
from dmltf.data.samplers.base import Sampler


@samplers.register("balanced")
class BalancedSampler(Sampler):
    """P classes x K images per batch (see the module docstring); groups of K."""

    def check(self, split, num_shares=1):
        super().check(split, num_shares)
        if self.classes_per_batch > split.num_classes:
            raise ValueError(f"classes_per_batch={self.classes_per_batch} exceeds the {split.num_classes} classes "
                             f"of split {split.name!r}")

    def batches(self, split, *, seed, epoch):
        return balanced_batches(split.labels, self.classes_per_batch, self.samples_per_class, seed=seed, epoch=epoch)


def balanced_batches(labels, classes_per_batch, samples_per_class, *, seed, epoch):
    """Indices into ``labels``, int64 [steps_per_epoch, P * K], K consecutive per class."""
    labels = np.asarray(labels)
    classes, members = _class_members(labels)
    P, K = int(classes_per_batch), int(samples_per_class)
    if P > len(classes):
        raise ValueError(f"classes_per_batch={P} exceeds the {len(classes)} classes of the labels")
    rng = np.random.default_rng([int(seed), int(epoch)])
    steps = max(1, len(labels) // (P * K))
    pools = [_Pool(m) for m in members]
    out = np.empty((steps, P * K), np.int64)
    cycle = rng.permutation(len(classes))
    for step in range(steps):
        if len(cycle) < P:
            rest = rng.permutation(np.setdiff1d(np.arange(len(classes)), cycle))
            cycle = np.concatenate([cycle, rest, cycle])  # old remainder first, then a new full cycle
        chosen, cycle = cycle[:P], cycle[P:]
        out[step] = np.concatenate([pools[c].take(K, rng) for c in chosen])
    return out


def _class_members(labels):
    """Sorted class ids and, for each, the indices of its examples."""
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    return classes, np.split(order, starts[1:])


class _Pool:
    """Shuffled cycle over the indices of one class."""

    def __init__(self, indices):
        self.indices = indices
        self.order, self.pos = None, 0

    def take(self, k, rng):
        n = len(self.indices)
        if n < k:
            return np.concatenate([rng.permutation(self.indices), rng.choice(self.indices, k - n)])
        if self.order is None or self.pos + k > n:
            self.order, self.pos = rng.permutation(self.indices), 0
        self.pos += k
        return self.order[self.pos - k:self.pos]
