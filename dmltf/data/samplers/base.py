"""The sampler contract.

A sampler draws the batches of one epoch as indices into a split: ``batches(split, seed=,
epoch=)`` returns int64 [steps, batch_size], a pure function of (split, seed, epoch), so a
resumed run sees the batches of an uninterrupted one; ``steps_per_epoch(split)`` says how many
without drawing. Consecutive runs of ``group_size`` indices belong together (a class group, a
triple): a global batch is cut into per-replica (or per-worker) shares at group boundaries
only, and :meth:`check` refuses a number of shares that would cut a group.

Every sampler takes the shared ``classes_per_batch`` (P) and ``samples_per_class`` (K) flags
and documents what batch it builds from them; the global batch always has ``P * K`` images.
"""


class Sampler:
    """Base class: subclasses implement :meth:`batches` (and :meth:`steps_per_epoch` when an
    epoch is not ``N // (P * K)`` batches)."""

    def __init__(self, classes_per_batch, samples_per_class):
        for name, value in (("classes_per_batch", classes_per_batch), ("samples_per_class", samples_per_class)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.classes_per_batch, self.samples_per_class = int(classes_per_batch), int(samples_per_class)

    @property
    def batch_size(self):
        return self.classes_per_batch * self.samples_per_class

    @property
    def group_size(self):
        """Indices that must stay together in one share of a batch."""
        return self.samples_per_class

    def steps_per_epoch(self, split):
        """Batches in one epoch: ``max(1, N // batch_size)`` unless the sampler says otherwise."""
        return max(1, split.num_examples // self.batch_size)

    def check(self, split, num_shares=1):
        """Raises ValueError if ``split`` cannot be sampled, or a batch not cut into ``num_shares``
        shares of whole groups."""
        if int(num_shares) != num_shares or num_shares < 1:
            raise ValueError(f"the number of batch shares must be a positive integer, got {num_shares!r}")
        if self.batch_size % (num_shares * self.group_size):
            raise ValueError(f"{type(self).__name__}: a batch of {self.batch_size} images in groups of "
                             f"{self.group_size} cannot be cut into {num_shares} shares of whole groups")

    def batches(self, split, *, seed, epoch):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(classes_per_batch={self.classes_per_batch}, " \
               f"samples_per_class={self.samples_per_class})"
