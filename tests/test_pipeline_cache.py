"""The evaluation pipeline's in-memory cache of decoded, transformed images
(dmltf/data/pipeline.py ``eval_dataset``): the same elements in the same order as without it, over
two passes and later datasets of the split; a split over the limit is not cached. Budget: ~3 s."""
import numpy as np
import pytest

from dmltf import data
from dmltf.data import ArraySplit, DatasetWriter, open_dataset
from dmltf.data.pipeline import eval_cache_key

SIZE = 8  # the eval resize target, from 12 x 10 images


def noisy_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 12, 10, 3), dtype=np.uint8)


def elements(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def eval_set(split, **kwargs):
    return data.eval_dataset(split, 4, image_size=SIZE, preprocessing="torch_imagenet", **kwargs)


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def jpeg_split(tmp_path, n=7):
    path = str(tmp_path / "jpeg.h5")
    with DatasetWriter(path, encoding="jpeg", class_names=["a", "b"]) as w:
        w.begin_split("test", num_examples=n, image_shape=None)
        for i, image in enumerate(noisy_images(n, seed=1)):
            w.add(image, i % 2)
        w.end_split()
    return open_dataset(path).split("test")


@pytest.mark.parametrize("source", ["raw", "jpeg"])
def test_cached_and_uncached_give_the_same_elements_over_two_passes(tmp_path, source):
    split = ArraySplit(noisy_images(13), np.arange(13) % 3) if source == "raw" else jpeg_split(tmp_path)
    uncached = eval_set(split, cache_bytes=0)
    assert not split.eval_cache
    reference = elements(uncached)
    assert_same(elements(uncached), reference)  # uncached: deterministic on its own
    cached = eval_set(split)
    assert len(split.eval_cache) == 1
    assert_same(elements(cached), reference)  # the pass that fills the cache
    assert_same(elements(cached), reference)  # read from the cache
    again = eval_set(split)  # a later evaluation of the split reuses the cache
    assert_same(elements(again), reference)
    assert len(split.eval_cache) == 1
    assert sum(len(y) for _, y in reference) == split.num_examples  # the last partial batch is there


def test_a_later_dataset_reads_the_cache_not_the_source():
    split = ArraySplit(noisy_images(6), np.arange(6) % 2)
    first = elements(eval_set(split))
    split.images[:] = 0  # a cached transform does not read the images again
    assert_same(elements(eval_set(split)), first)
    zeros = elements(eval_set(split, cache_bytes=0))
    def constant(x):  # one value per channel: the preprocessed zero image
        return (np.ptp(x, axis=(0, 1, 2)) == 0).all()

    assert all(constant(x) for x, _ in zeros) and not any(constant(x) for x, _ in first)


def test_a_split_over_the_limit_is_not_cached():
    split = ArraySplit(noisy_images(5), np.arange(5))
    decoded_bytes = 5 * SIZE * SIZE * 3 * 4  # float32 [8, 8, 3] per image, before preprocessing
    images = data.pipeline._Images(split, "none", "none", SIZE)
    assert eval_cache_key(split, images, "none", decoded_bytes - 1) is None
    assert eval_cache_key(split, images, "none", decoded_bytes) == ("none", (SIZE, SIZE, 3))
    reference = elements(eval_set(split, cache_bytes=decoded_bytes - 1))
    assert not split.eval_cache
    assert_same(elements(eval_set(split, cache_bytes=decoded_bytes)), reference)
    assert list(split.eval_cache) == [("none", (SIZE, SIZE, 3))]


def test_the_default_limit_is_the_split_memory_budget(monkeypatch):
    split = ArraySplit(noisy_images(3), np.arange(3))
    images = data.pipeline._Images(split, "none", "none", SIZE)
    monkeypatch.setenv("DMLTF_DATA_RAM_BYTES", str(3 * SIZE * SIZE * 3 * 4 - 1))
    assert eval_cache_key(split, images, "none") is None
    monkeypatch.setenv("DMLTF_DATA_RAM_BYTES", str(3 * SIZE * SIZE * 3 * 4))
    assert eval_cache_key(split, images, "none") is not None
    augmentation = data.augmentation.get("none", image_size=SIZE)  # an object: its parameters are not in a key
    assert eval_cache_key(split, images, augmentation) is None
