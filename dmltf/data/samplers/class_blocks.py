"""Contiguous class blocks, PaddlePaddle metric_learning's ``common_iterator``.

Reference: ``PaddlePaddle/models`` ``fluid/PaddleCV/metric_learning/reader.py``
``common_iterator`` (identical in the later ``PaddleCV/metric_learning``), the reader of the
quadruplet, eml and npairs losses, batched by ``train_pair.py`` in stream order. Those losses
rely on the layout (``calculate_order_dist_matrix`` assumes blocks of ``samples_each_class``).

The reference, batch by batch (``class_num = batch_size / samples_each_class``): shuffle the
list of all classes and take its first ``class_num``; for each in turn, shuffle its images and
yield the first ``samples_each_class``. Each batch is drawn independently: a class appears at
most once in a batch, but may appear in any number of batches; there is no epoch.

How one epoch is drawn here (numpy ``Generator`` seeded with ``[seed, epoch]``, the same
procedure): for each of ``max(1, N // (P * K))`` batches, a permutation of the eligible classes,
its first P (classes_per_batch) in that order, and for each, the first K (samples_per_class,
Paddle's ``samples_each_class``, default 2) of a permutation of its images. Indices
[j*K, (j+1)*K) of a batch are one class, K distinct images; ``group_size`` is K.
``steps_per_epoch`` (the reference counts iterations) makes an epoch draw about as many images
as the split holds, like the other samplers.

Deviation, classes with fewer than K images: the reference yields all of them, a short block,
which shifts every later batch of its stream off the block layout (batches are cut every
``batch_size`` images), so classes no longer line up with the loss's blocks and may repeat in a
batch. Here such classes are not drawn (eligible = at least K images), keeping every block K
distinct images. With Paddle's K = 2 on SOP no class is left out (each has at least 2 images).

Example:
    >>> import numpy as np
    >>> from dmltf.data.samplers.class_blocks import class_block_batches
    >>> labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    >>> b = class_block_batches(labels, classes_per_batch=2, samples_per_class=2, seed=0, epoch=0)
    >>> blocks = labels[b].reshape(-1, 2)
    >>> b.shape, bool(np.all(blocks[:, 0] == blocks[:, 1])), 3 in labels[b]
    ((2, 4), True, False)
"""
import numpy as np

from dmltf.data import samplers
from dmltf.data.samplers.balanced import _class_members
from dmltf.data.samplers.base import Sampler


@samplers.register("class_blocks")
class ClassBlocksSampler(Sampler):
    """P random classes x K distinct images per batch, blocks in order; groups of K."""

    def check(self, split, num_shares=1):
        super().check(split, num_shares)
        _eligible_members(split.labels, self.classes_per_batch, self.samples_per_class, f"split {split.name!r}")

    def batches(self, split, *, seed, epoch):
        return class_block_batches(split.labels, self.classes_per_batch, self.samples_per_class, seed=seed,
                                   epoch=epoch)


def class_block_batches(labels, classes_per_batch, samples_per_class, *, seed, epoch):
    """Indices into ``labels``, int64 [max(1, N // (P * K)), P * K], K consecutive per class."""
    labels = np.asarray(labels)
    P, K = int(classes_per_batch), int(samples_per_class)
    members = _eligible_members(labels, P, K, "the labels")
    rng = np.random.default_rng([int(seed), int(epoch)])
    steps = max(1, len(labels) // (P * K))
    out = np.empty((steps, P * K), np.int64)
    for step in range(steps):
        chosen = rng.permutation(len(members))[:P]
        out[step] = np.concatenate([members[c][rng.permutation(len(members[c]))[:K]] for c in chosen])
    return out


def _eligible_members(labels, classes_per_batch, samples_per_class, where):
    """The indices of each class with at least K images; at least P such classes."""
    _, members = _class_members(np.asarray(labels))
    eligible = [m for m in members if len(m) >= samples_per_class]
    if len(eligible) < classes_per_batch:
        raise ValueError(f"class_blocks needs classes_per_batch={classes_per_batch} classes with at least "
                         f"samples_per_class={samples_per_class} images; {where} has {len(eligible)} "
                         f"(of {len(members)} classes)")
    return eligible
