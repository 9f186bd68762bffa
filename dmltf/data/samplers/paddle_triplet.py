"""Random triplets, PaddlePaddle metric_learning's triplet reader.

Reference: ``PaddlePaddle/models`` ``fluid/PaddleCV/metric_learning/reader.py``
``triplet_iterator`` (identical in the later ``PaddleCV/metric_learning``), batched by
``train_pair.py`` with ``paddle.batch(..., drop_last=True)`` in stream order.

The reference's endless stream, triple by triple: shuffle the class list and take its first
two classes (anchor class, negative class); shuffle the anchor class's images and take the
first two (anchor, positive); one uniform image of the negative class; yield anchor, positive,
negative. A batch is the next ``batch_size`` images of the stream (a multiple of 3, asserted),
so it holds ``batch_size / 3`` independent triples [a, p, n, a, p, n, ...].

How one epoch is drawn here (numpy ``Generator`` seeded with ``[seed, epoch]``), the same
distribution, vectorised over all ``steps * batch_size / 3`` triples of the epoch:

* anchor class c uniform over the classes with at least 2 images; negative class uniform over
  the other classes (c excluded);
* anchor image i uniform over c's n images, positive j uniform over the other n - 1;
* negative image uniform over the negative class's images.

The batch is ``classes_per_batch * samples_per_class`` images (only the product matters; it
must be a multiple of 3); triples are contiguous, so ``group_size`` is 3.
``steps_per_epoch = max(1, N // batch_size)``: the reference counts iterations and has no
epoch; this makes an epoch draw about as many images as the split holds, like the other samplers.

Classes with a single image: in the reference, drawing one as the anchor class stops the reader
(unpacking ``data_ind[:2]`` fails; every SOP class has at least 2 images, so it never did).
Here they are only ever negatives, which is the reference's draw conditioned on an anchor class
with 2 images: when every class has 2 images, exactly the reference's distribution.

Example:
    >>> import numpy as np
    >>> from dmltf.data.samplers.paddle_triplet import triplet_batches
    >>> labels = np.array([0, 0, 1, 1, 1, 2])
    >>> b = triplet_batches(labels, batch_size=6, seed=0, epoch=0)
    >>> t = labels[b].reshape(-1, 3)
    >>> b.shape, bool(np.all(t[:, 0] == t[:, 1]) and np.all(t[:, 0] != t[:, 2]))
    ((1, 6), True)
"""
import numpy as np

from dmltf.data import samplers
from dmltf.data.samplers.balanced import _class_members
from dmltf.data.samplers.base import Sampler


@samplers.register("paddle_triplet")
class PaddleTripletSampler(Sampler):
    """``P * K / 3`` random (anchor, positive, negative) triples per batch; groups of 3."""

    def __init__(self, classes_per_batch, samples_per_class):
        super().__init__(classes_per_batch, samples_per_class)
        if self.batch_size % 3:
            raise ValueError(f"paddle_triplet: the batch (classes_per_batch * samples_per_class = "
                             f"{self.classes_per_batch} * {self.samples_per_class} = {self.batch_size}) must be a "
                             f"multiple of 3, one (anchor, positive, negative) triple after another")

    @property
    def group_size(self):
        return 3

    def check(self, split, num_shares=1):
        super().check(split, num_shares)
        _check_labels(split.labels, f"split {split.name!r}")

    def batches(self, split, *, seed, epoch):
        return triplet_batches(split.labels, self.batch_size, seed=seed, epoch=epoch)


def triplet_batches(labels, batch_size, *, seed, epoch):
    """Indices into ``labels``, int64 [max(1, N // batch_size), batch_size], [a, p, n, ...]."""
    labels = np.asarray(labels)
    if int(batch_size) != batch_size or batch_size < 3 or batch_size % 3:
        raise ValueError(f"batch_size must be a positive multiple of 3, got {batch_size!r}")
    _check_labels(labels, "the labels")
    _, members = _class_members(labels)
    sizes = np.array([len(m) for m in members])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    by_class = np.concatenate(members)  # class c's images are by_class[offsets[c]:offsets[c] + sizes[c]]
    steps = max(1, len(labels) // int(batch_size))
    num = steps * int(batch_size) // 3
    rng = np.random.default_rng([int(seed), int(epoch)])
    anchor_classes = np.flatnonzero(sizes >= 2)
    pos_class = anchor_classes[rng.integers(len(anchor_classes), size=num)]
    neg_class = rng.integers(len(sizes) - 1, size=num)
    neg_class += neg_class >= pos_class  # uniform over the classes other than the anchor's
    anchor = rng.integers(sizes[pos_class])
    positive = rng.integers(sizes[pos_class] - 1)
    positive += positive >= anchor  # uniform over the anchor class's other images
    negative = rng.integers(sizes[neg_class])
    triples = np.stack([offsets[pos_class] + anchor, offsets[pos_class] + positive, offsets[neg_class] + negative], 1)
    return by_class[triples].reshape(steps, int(batch_size)).astype(np.int64)


def _check_labels(labels, where):
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.max() < 2:
        raise ValueError(f"paddle_triplet needs at least 2 classes, one of them with 2 images (anchor and "
                         f"positive); {where} has {len(classes)} class(es) of at most "
                         f"{counts.max() if len(counts) else 0} image(s)")
