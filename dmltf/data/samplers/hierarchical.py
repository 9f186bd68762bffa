"""Super-class pair batches: LM-Metric's hierarchical sampler (``--data_sampler hierarchical``).

Reference: ``Shiyang-Yan/LM-metric`` ``datasampler/hierarchical_sampler.py`` (its ``reshuffle``,
"inspired by kunhe/Deep-Metric-Learning-Baselines"), with the per-super-class class lists of
``datasets/base_dataset.py`` ``get_super_dict``. It needs the split's extra labels
``super_labels`` (SOP files from ``datasets/sop_converter.py`` store them).

How one epoch is drawn (numpy ``Generator`` seeded with ``[seed, epoch]``, used in the
reference's order; P = classes_per_batch, K = samples_per_class, the batch is P * K):

* for every unordered pair (s, t), s < t, of the split's super-classes, in increasing order,
  ``batches_per_pair`` batches are built; each is a half-batch of P / 2 classes of s followed
  by one of P / 2 classes of t;
* a half-batch of super-class s: the classes of s in a random permutation; each in turn
  adds K images of its class (K distinct ones when the class has at least K images, else K
  drawn with replacement: ``choice(images, K, replace=n < K)``), and a class that would no
  longer fit in the P * K / 2 places is skipped; with K fixed, that is the first P / 2 classes
  of the permutation;
* with ``shuffle_batch`` (the reference), each batch is then permuted;
* finally the list of batches is permuted.

``steps_per_epoch`` = ``batches_per_pair * S * (S - 1) / 2`` for S super-classes: 660 on SOP
(12 super-classes, 66 pairs). Where a class's images carry several super-labels, it is a class
of each of them, restricted to its images with that super-label (as ``get_super_dict``).

Replica shares: a permuted batch keeps no group together, so ``group_size`` is 1 and each
replica's contiguous share is an arbitrary subset of the batch. With ``shuffle_batch=False``
the batch is laid out half-batch after half-batch, K images of a class contiguous
(``group_size`` K; two replicas get one super-class each).

Deviations from the reference:

* The batch size is fixed at P * K, as static shapes need. The reference asserts that a
  half-batch is a multiple of K (so does this sampler: P must be even, which rules out
  LM-Metric's own defaults ``--bs 180 --samples_per_class 4``, 90 not being a multiple of 4;
  the reference stops on that assertion too). A super-class with fewer than P / 2 classes would
  give the reference a short half-batch; here it is an error.
* Randomness comes from the generator seeded with ``[seed, epoch]`` instead of numpy's global
  state, so an epoch is reproducible (and resumable) from (seed, epoch) alone; the reference's
  ``samples_per_class = 0`` mode (whole classes) does not exist, K is at least 1.

Example:
    >>> import numpy as np
    >>> from dmltf.data.samplers.hierarchical import hierarchical_batches
    >>> labels = np.repeat(np.arange(6), 3)           # 6 classes of 3 images
    >>> super_labels = np.repeat([0, 0, 1, 1, 2, 2], 3)  # 3 super-classes of 2 classes
    >>> b = hierarchical_batches(labels, super_labels, 4, 2, batches_per_pair=2, seed=0, epoch=0)
    >>> b.shape, sorted({tuple(np.unique(super_labels[row]).tolist()) for row in b})
    ((6, 8), [(0, 1), (0, 2), (1, 2)])
"""
import itertools

import numpy as np

from dmltf.data import samplers
from dmltf.data.samplers.base import Sampler

SUPER_LABELS = "super_labels"


@samplers.register("hierarchical")
class HierarchicalSampler(Sampler):
    """Batches of two half-batches from a pair of super-classes (see the module docstring)."""

    def __init__(self, classes_per_batch, samples_per_class, batches_per_pair=10, shuffle_batch=True):
        super().__init__(classes_per_batch, samples_per_class)
        if int(batches_per_pair) != batches_per_pair or batches_per_pair < 1:
            raise ValueError(f"batches_per_pair must be a positive integer, got {batches_per_pair!r}")
        if self.classes_per_batch % 2:
            raise ValueError(f"hierarchical: classes_per_batch={self.classes_per_batch} must be even, so that each "
                             f"half-batch of a super-class holds whole classes of samples_per_class="
                             f"{self.samples_per_class} images")
        self.batches_per_pair, self.shuffle_batch = int(batches_per_pair), bool(shuffle_batch)

    @property
    def group_size(self):
        return 1 if self.shuffle_batch else self.samples_per_class

    def steps_per_epoch(self, split):
        num_super = len(np.unique(super_labels_of(split)))
        return self.batches_per_pair * num_super * (num_super - 1) // 2

    def check(self, split, num_shares=1):
        super().check(split, num_shares)
        _super_class_members(split.labels, super_labels_of(split), self.classes_per_batch // 2)

    def batches(self, split, *, seed, epoch):
        return hierarchical_batches(split.labels, super_labels_of(split), self.classes_per_batch,
                                    self.samples_per_class, batches_per_pair=self.batches_per_pair,
                                    shuffle_batch=self.shuffle_batch, seed=seed, epoch=epoch)

    def __repr__(self):
        return (f"HierarchicalSampler(classes_per_batch={self.classes_per_batch}, samples_per_class="
                f"{self.samples_per_class}, batches_per_pair={self.batches_per_pair}, "
                f"shuffle_batch={self.shuffle_batch})")


def super_labels_of(split):
    """The split's ``super_labels``, or a ValueError saying where they come from."""
    if SUPER_LABELS not in split.extra_labels:
        raise ValueError(f"the hierarchical sampler needs the extra labels {SUPER_LABELS!r}, which split "
                         f"{split.name!r} does not have; datasets/sop_converter.py stores them for SOP")
    return split.extra_labels[SUPER_LABELS]


def hierarchical_batches(labels, super_labels, classes_per_batch, samples_per_class, *, batches_per_pair=10,
                         shuffle_batch=True, seed, epoch):
    """Indices into ``labels``, int64 [batches_per_pair * #super-class pairs, P * K]."""
    P, K = int(classes_per_batch), int(samples_per_class)
    if P % 2:
        raise ValueError(f"classes_per_batch={P} must be even (two half-batches of whole classes)")
    members = _super_class_members(np.asarray(labels), np.asarray(super_labels), P // 2)
    rng = np.random.default_rng([int(seed), int(epoch)])
    batches = []
    for pair in itertools.combinations(sorted(members), 2):
        for _ in range(int(batches_per_pair)):
            batch = np.concatenate([_half_batch(members[s], P // 2, K, rng) for s in pair])
            batches.append(rng.permutation(batch) if shuffle_batch else batch)
    out = np.stack(batches).astype(np.int64)
    return out[rng.permutation(len(out))]


def _half_batch(classes, num_classes, samples_per_class, rng):
    """K images of each of the first ``num_classes`` classes of a permutation of ``classes``."""
    chosen = rng.permutation(len(classes))[:num_classes]
    return np.concatenate([rng.choice(classes[c], samples_per_class, replace=len(classes[c]) < samples_per_class)
                           for c in chosen])


def _super_class_members(labels, super_labels, classes_per_half):
    """{super-class: [indices of each of its classes]}; every super-class must fill a half-batch."""
    order = np.lexsort((labels, super_labels))
    keys = np.stack([super_labels[order], labels[order]], axis=1)
    starts = np.flatnonzero(np.any(np.diff(keys, axis=0, prepend=keys[:1] - 1) != 0, axis=1))
    members = {}
    for start, group in zip(starts, np.split(order, starts[1:])):
        members.setdefault(int(keys[start, 0]), []).append(group)
    if len(members) < 2:
        raise ValueError(f"the hierarchical sampler needs at least 2 super-classes, got {len(members)}")
    short = ", ".join(f"super-class {s} has {len(c)}" for s, c in members.items() if len(c) < classes_per_half)
    if short:
        raise ValueError(f"the hierarchical sampler fills a half-batch with {classes_per_half} classes of one "
                         f"super-class, but {short}")
    return members
