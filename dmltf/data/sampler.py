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
    >>> from dmltf.data.sampler import balanced_batches
    >>> labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    >>> b = balanced_batches(labels, classes_per_batch=2, samples_per_class=2, seed=0, epoch=0)
    >>> b.shape, labels[b[0]].reshape(2, 2)[:, 0].tolist() == labels[b[0]].reshape(2, 2)[:, 1].tolist()
    ((2, 4), True)
"""
import numpy as np


def check_pk(num_classes, classes_per_batch, samples_per_class, num_replicas=1):
    for name, value in (("classes_per_batch", classes_per_batch), ("samples_per_class", samples_per_class),
                        ("num_replicas", num_replicas)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if classes_per_batch > num_classes:
        raise ValueError(f"classes_per_batch={classes_per_batch} exceeds the {num_classes} classes of the split")
    if classes_per_batch % num_replicas:
        raise ValueError(f"classes_per_batch={classes_per_batch} is not divisible by num_replicas={num_replicas}: "
                         f"each replica's share of the global batch must hold whole class groups")


def steps_per_epoch(num_examples, classes_per_batch, samples_per_class):
    """Batches per epoch: ``max(1, num_examples // (classes_per_batch * samples_per_class))``."""
    return max(1, int(num_examples) // (classes_per_batch * samples_per_class))


def balanced_batches(labels, classes_per_batch, samples_per_class, *, seed, epoch):
    """Indices into ``labels``, int64 [steps_per_epoch, P * K], K consecutive per class."""
    labels = np.asarray(labels)
    classes, members = _class_members(labels)
    P, K = int(classes_per_batch), int(samples_per_class)
    check_pk(len(classes), P, K)
    rng = np.random.default_rng([int(seed), int(epoch)])
    steps = steps_per_epoch(len(labels), P, K)
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


def random_batches(num_examples, batch_size, *, seed, epoch):
    """Plain shuffled batches (Fuel's ShuffledScheme, as the DVML reference): a permutation of
    all examples cut into ``steps_per_epoch`` batches of ``batch_size``, int64 [steps, batch_size];
    each example at most once per epoch (the remainder is dropped). No class balancing."""
    if int(batch_size) != batch_size or not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must be an integer in [1, {num_examples}], got {batch_size!r}")
    steps = int(num_examples) // int(batch_size)
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(int(num_examples))
    return order[:steps * batch_size].reshape(steps, batch_size).astype(np.int64)


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
