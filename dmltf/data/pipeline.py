"""tf.data pipelines: class-balanced training batches and in-order evaluation batches.

``train_dataset`` yields exactly ``steps_per_epoch(split, P, K)`` global batches
``(images float32 [P*K, h, w, C], labels int64 [P*K])`` for one epoch (epoch = N // (P*K)
batches, at least 1; see ``sampler.py``). Class groups of K images are contiguous; labels are
remapped to 0..C-1 in ``split.class_ids`` order (what proxy losses index by). Everything is a
pure function of (seed, epoch): the sampler is seeded with [seed, epoch] and each image's
augmentation with a stateless seed folded from (seed, epoch) and its position in the epoch, so
a resumed run sees the same batches and crops as an uninterrupted one.

``eval_dataset`` yields ``(images, labels)`` in file order with the split's own labels,
the last partial batch included.

Stages: index batches (numpy) -> one vectorised gather per batch (``numpy.take`` on the split
held in RAM, or contiguous HDF5 row reads when streamed; see ``splits.py``) -> per image, in
parallel: JPEG decode, augmentation preset -> batch -> preprocessing of the whole batch ->
prefetch.

Example:
    >>> import numpy as np
    >>> from dmltf import data
    >>> split = data.ArraySplit(np.zeros((12, 8, 8, 1), np.uint8), np.repeat([5, 6, 7], 4))
    >>> ds = data.train_dataset(split, 3, 2, seed=0, epoch=0)
    >>> data.steps_per_epoch(split, 3, 2), [tuple(t.shape) for t in next(iter(ds))]
    (2, [(6, 8, 8, 1), (6,)])
"""
import numpy as np
import tensorflow as tf

from dmltf.data import augmentation as augmentations
from dmltf.data import preprocessing as preprocessings
from dmltf.data import sampler

# libjpeg's accurate integer DCT: the same pixels as Pillow's default decoder.
_DCT = "INTEGER_ACCURATE"
AUTOTUNE = tf.data.AUTOTUNE


def decode_jpeg(data, channels):
    return tf.io.decode_jpeg(data, channels=channels, dct_method=_DCT)


def decode_all(encoded, channels, what):
    """Object array of JPEG bytes -> uint8 [N, H, W, C]; all images must share one size."""
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(encoded), tf.string))
    images = list(ds.map(lambda b: decode_jpeg(b, channels), num_parallel_calls=AUTOTUNE).as_numpy_iterator())
    shapes = sorted({im.shape for im in images})
    if len(shapes) > 1:
        raise ValueError(f"{what}: JPEG images have {len(shapes)} different sizes (e.g. {shapes[:3]}), so "
                         f"they cannot be stacked; use the tf.data pipeline with image_size instead")
    return np.stack(images)


def steps_per_epoch(split, classes_per_batch, samples_per_class):
    """Batches in one training epoch: ``max(1, split.num_examples // (P * K))``."""
    return sampler.steps_per_epoch(split.num_examples, classes_per_batch, samples_per_class)


class _Images:
    """Loads a batch of images by index and turns one image into a model input."""

    def __init__(self, split, augmentation, preprocessing, image_size):
        self.split = split
        self.augmentation = augmentations.get(augmentation, image_size=image_size)
        self.preprocessing = preprocessings.get(preprocessing)
        self.channels = split.image_shape[-1] if split.image_shape else 3
        self.shape = self.augmentation.output_shape(split.image_shape, self.channels)
        if self.shape is None:
            raise ValueError(f"split {split.name!r} holds JPEG images of unknown or varying size and "
                             f"augmentation {self.augmentation.name!r} keeps the input size; pass image_size")
        self.fetch = split.reader()

    def load(self, indices):
        """int64 [B] -> uint8 [B, H, W, C] (raw) or string [B] (JPEG), one numpy gather."""
        if self.split.encoding == "raw":
            out = tf.numpy_function(self.fetch, [indices], tf.uint8, stateful=False)
            return tf.ensure_shape(out, [None, *self.split.image_shape])
        return tf.ensure_shape(tf.numpy_function(self.fetch, [indices], tf.string, stateful=False), [None])

    def transform(self, image, seed=None):
        if self.split.encoding == "jpeg":
            image = decode_jpeg(image, self.channels)
        image = self.augmentation.eval(image) if seed is None else self.augmentation.train(image, seed)
        return tf.ensure_shape(image, self.shape)

    def preprocess(self, images, labels):
        return self.preprocessing(images), labels  # on whole batches: one vectorised op


def train_dataset(split, classes_per_batch, samples_per_class, *, seed, epoch, augmentation="none",
                  preprocessing="none", image_size=None, num_replicas=1, shard=None, sampling="balanced"):
    """One epoch of class-balanced global batches (see the module docstring).

    Args:
        split: a ``Split`` (from ``open_dataset(...).split(name)``) or an ``ArraySplit``.
        classes_per_batch: P, distinct classes per batch (<= split.num_classes).
        samples_per_class: K, images per class per batch.
        seed, epoch: ints; the epoch's batches and augmentations depend only on them.
        augmentation: preset name (``augmentation.names()``) or object; ``train`` transforms.
        preprocessing: name (``preprocessing.names()``) or callable, applied after augmentation.
        image_size: overrides the preset's crop size (or resize size for ``none``).
        num_replicas: P must be divisible by it, so each replica's contiguous share of a global
            batch holds P / num_replicas whole class groups.
        shard: optional (index, count) to yield only the index-th contiguous share of each global
            batch (P*K/count examples, same images and augmentations as in the full batch), for
            per-worker input pipelines; P must be divisible by count.
        sampling: ``balanced`` (P x K, above) or ``random`` (``sampler.random_batches`` of P * K
            images: no class groups, so per-replica shares hold arbitrary classes).
    """
    P, K = classes_per_batch, samples_per_class
    images = _Images(split, augmentation, preprocessing, image_size)
    if sampling == "random":
        batches = sampler.random_batches(split.num_examples, P * K, seed=seed, epoch=epoch)
    elif sampling == "balanced":
        sampler.check_pk(split.num_classes, P, K, num_replicas)
        batches = sampler.balanced_batches(split.labels, P, K, seed=seed, epoch=epoch)
    else:
        raise ValueError(f"sampling must be balanced or random, got {sampling!r}")
    labels = np.searchsorted(split.class_ids, split.labels)[batches]
    positions = np.arange(batches.size, dtype=np.int64).reshape(batches.shape)
    if shard is not None:
        index, count = shard
        if sampling == "balanced":
            sampler.check_pk(split.num_classes, P, K, count)
        elif P * K % count:
            raise ValueError(f"a batch of {P * K} cannot be shared by {count} input pipelines")
        share = slice(index * P * K // count, (index + 1) * P * K // count)
        batches, labels, positions = batches[:, share], labels[:, share], positions[:, share]
    base_seed = tf.constant(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2).astype(np.int64))

    def transform(image, label, position):
        return images.transform(image, tf.random.experimental.stateless_fold_in(base_seed, position)), label

    return (tf.data.Dataset.from_tensor_slices((batches, labels, positions))
            .map(lambda i, y, p: (images.load(i), y, p), num_parallel_calls=AUTOTUNE, deterministic=True)
            .unbatch()
            .map(transform, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(batches.shape[1], drop_remainder=True)
            .map(images.preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)
            .prefetch(AUTOTUNE))


def eval_dataset(split, batch_size, *, augmentation="none", preprocessing="none", image_size=None):
    """``(images, labels)`` batches in file order with the split's labels; last batch may be partial."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = _Images(split, augmentation, preprocessing, image_size)
    n = split.num_examples
    labels = tf.constant(split.labels)

    def load(start):
        indices = tf.range(start, tf.minimum(start + batch_size, n))
        return images.load(indices), tf.gather(labels, indices)

    return (tf.data.Dataset.range(0, n, batch_size)
            .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
            .unbatch()
            .map(lambda x, y: (images.transform(x), y), num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(batch_size)
            .map(images.preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)
            .prefetch(AUTOTUNE))
