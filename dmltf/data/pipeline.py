"""tf.data pipelines: training batches drawn by a sampler and in-order evaluation batches.

``train_dataset`` yields exactly ``sampler.steps_per_epoch(split)`` global batches
``(images float32 [B, h, w, C], labels int64 [B])`` for one epoch, B the sampler's batch size,
in the sampler's order (e.g. contiguous class groups of K; see ``samplers/``); labels are
remapped to 0..C-1 in ``split.class_ids`` order (what proxy losses index by). Everything is a
pure function of (seed, epoch): the sampler draws from (seed, epoch) and each image's
augmentation with a stateless seed folded from (seed, epoch) and its position in the epoch, so
a resumed run sees the same batches and crops as an uninterrupted one.

``eval_dataset`` yields ``(images, labels)`` in file order with the split's own labels,
the last partial batch included.

Stages: index batches (numpy) -> one vectorised gather per batch (``numpy.take`` on the split
held in RAM, or contiguous HDF5 row reads when streamed; see ``splits.py``) -> per image, in
parallel: JPEG decode, augmentation preset -> batch -> preprocessing of the whole batch ->
prefetch. Evaluation caches its decoded, transformed images when they fit (``eval_dataset``);
training caches only the stored images (``splits.py``): its decode and random augmentation
run every epoch, after the cache point.

Example:
    >>> import numpy as np
    >>> from dmltf import data
    >>> split = data.ArraySplit(np.zeros((12, 8, 8, 1), np.uint8), np.repeat([5, 6, 7], 4))
    >>> sampler = data.samplers.get("balanced", classes_per_batch=3, samples_per_class=2)
    >>> ds = data.train_dataset(split, sampler, seed=0, epoch=0)
    >>> len(list(ds)), [tuple(t.shape) for t in next(iter(ds))]
    (2, [(6, 8, 8, 1), (6,)])
"""
import numpy as np
import tensorflow as tf

from dmltf.data import augmentation as augmentations
from dmltf.data import preprocessing as preprocessings
from dmltf.data.splits import memory_budget

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


def train_dataset(split, sampler, *, seed, epoch, augmentation="none", preprocessing="none", image_size=None,
                  num_replicas=1, shard=None):
    """One epoch of global batches drawn by ``sampler`` (see the module docstring).

    Args:
        split: a ``Split`` (from ``open_dataset(...).split(name)``) or an ``ArraySplit``.
        sampler: a ``dmltf.data.samplers`` sampler (it decides the batches and their number).
        seed, epoch: ints; the epoch's batches and augmentations depend only on them.
        augmentation: preset name (``augmentation.names()``) or object; ``train`` transforms.
        preprocessing: name (``preprocessing.names()``) or callable, applied after augmentation.
        image_size: overrides the preset's crop size (or resize size for ``none``).
        num_replicas: each replica's contiguous share of a global batch must hold whole
            sampler groups (e.g. P / num_replicas class groups of K).
        shard: optional (index, count) to yield only the index-th contiguous share of each global
            batch (same images and augmentations as in the full batch), for per-worker input
            pipelines; the share must hold whole sampler groups too.
    """
    images = _Images(split, augmentation, preprocessing, image_size)
    sampler.check(split, num_replicas)
    batches = sampler.batches(split, seed=seed, epoch=epoch)
    labels = np.searchsorted(split.class_ids, split.labels)[batches]
    positions = np.arange(batches.size, dtype=np.int64).reshape(batches.shape)
    if shard is not None:
        index, count = shard
        sampler.check(split, count)
        size = batches.shape[1]
        share = slice(index * size // count, (index + 1) * size // count)
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


def eval_dataset(split, batch_size, *, augmentation="none", preprocessing="none", image_size=None, cache_bytes=None):
    """``(images, labels)`` batches in file order with the split's labels; last batch may be partial.

    The eval transform (JPEG decode, resize / centre crop: deterministic) is done once per split:
    its float32 outputs, before preprocessing, are kept in memory by the first complete pass
    (``tf.data`` cache, held by the split, keyed by the preset name and output shape) and later
    eval datasets of the same split and transform read them from there, when they take at most
    ``cache_bytes`` (default :func:`dmltf.data.splits.memory_budget`: ``$DMLTF_DATA_RAM_BYTES``,
    else half the available RAM; 0 never caches). An augmentation given as an object is not
    cached (its name does not identify its parameters). The values and order are the same
    either way (:func:`eval_cache_key` says whether a split is cached).
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = _Images(split, augmentation, preprocessing, image_size)
    key = eval_cache_key(split, images, augmentation, cache_bytes)
    transformed = split.eval_cache.get(key) if key else None
    if transformed is None:
        n = split.num_examples
        labels = tf.constant(split.labels)

        def load(start):
            indices = tf.range(start, tf.minimum(start + batch_size, n))
            return images.load(indices), tf.gather(labels, indices)

        transformed = (tf.data.Dataset.range(0, n, batch_size)
                       .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
                       .unbatch()
                       .map(lambda x, y: (images.transform(x), y), num_parallel_calls=AUTOTUNE, deterministic=True))
        if key:
            transformed = split.eval_cache[key] = transformed.cache()
    return (transformed
            .batch(batch_size)
            .map(images.preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)
            .prefetch(AUTOTUNE))


def eval_cache_key(split, images, augmentation, cache_bytes=None):
    """The key under which :func:`eval_dataset` caches ``split``'s transformed images, or None
    when they are not cached (over ``cache_bytes``, or an augmentation object)."""
    if not isinstance(augmentation, str):
        return None
    limit = memory_budget() if cache_bytes is None else int(cache_bytes)
    decoded_bytes = split.num_examples * int(np.prod(images.shape)) * np.dtype(np.float32).itemsize
    return (augmentation, tuple(images.shape)) if decoded_bytes <= limit else None
