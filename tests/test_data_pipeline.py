"""Balanced training batches, evaluation order, determinism, streamed vs in-memory reading."""
import numpy as np
import pytest

from dmltf import data
from dmltf.data import ArraySplit, DatasetWriter, open_dataset

# Class sizes include singletons and classes smaller than K.
CLASS_SIZES = {10: 7, 11: 1, 12: 4, 13: 2, 14: 9, 15: 1, 16: 5}
LABELS = np.concatenate([np.full(n, c) for c, n in CLASS_SIZES.items()])
P, K = 3, 4


def index_split(labels=LABELS):
    """Each image stores its own index in two pixels, so batches can be traced back."""
    idx = np.arange(len(labels))
    images = np.stack([idx // 256, idx % 256], axis=1).astype(np.uint8).reshape(-1, 2, 1, 1)
    rng = np.random.default_rng(3)
    return ArraySplit(images, rng.permutation(labels))


def indices_of(images):
    images = np.asarray(images).reshape(len(images), 2)
    return (images[:, 0] * 256 + images[:, 1]).astype(int)


def balanced(p, k):
    return data.samplers.get("balanced", p, k)


def epoch(split, seed=0, epoch=0, **kwargs):
    ds = data.train_dataset(split, balanced(P, K), seed=seed, epoch=epoch, preprocessing="raw", **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_balanced_batches_p_by_k_contiguous_groups():
    split = index_split()
    batches = epoch(split)
    assert len(batches) == balanced(P, K).steps_per_epoch(split) == len(LABELS) // (P * K) == 2
    for images, labels in batches:
        assert images.shape == (P * K, 2, 1, 1) and images.dtype == np.float32
        assert labels.shape == (P * K,) and labels.dtype == np.int64
        groups = labels.reshape(P, K)
        assert (groups == groups[:, :1]).all(), "class groups must be contiguous"
        assert len(set(groups[:, 0])) == P, "P distinct classes"
        idx = indices_of(images).reshape(P, K)
        for g in range(P):
            raw = split.labels[idx[g]]
            assert (raw == raw[0]).all(), "images must belong to the batch label's class"
            # Labels are remapped to 0..C-1 in class_ids order.
            assert split.class_ids[groups[g, 0]] == raw[0]
            n = CLASS_SIZES[int(raw[0])]
            if n >= K:
                assert len(set(idx[g])) == K, "without replacement when the class has >= K images"
            else:
                assert set(idx[g]) == set(np.flatnonzero(split.labels == raw[0])), "all images of a small class"


def test_singleton_classes_are_drawn():
    singletons = [np.flatnonzero(LABELS == c)[0] for c, n in CLASS_SIZES.items() if n == 1]
    groups = np.concatenate([data.samplers.balanced.balanced_batches(LABELS, P, K, seed=0, epoch=e).reshape(-1, K)
                             for e in range(3)])
    for i in singletons:
        assert any((g == i).all() for g in groups), "a singleton class fills its group with its one image"


def test_sampler_covers_classes_evenly():
    labels = np.repeat(np.arange(10), 20)
    b = data.samplers.balanced.balanced_batches(labels, 4, 5, seed=1, epoch=0)
    assert b.shape == (10, 20)
    counts = np.bincount(labels[b].ravel(), minlength=10)
    # 40 class draws over 10 classes in shuffled cycles: each class 4 times (x 5 images).
    np.testing.assert_array_equal(counts, np.full(10, 20))
    for row in b:
        assert len(set(row)) == 20


def test_deterministic_per_seed_and_epoch():
    split = index_split()
    a, b = epoch(split, seed=7, epoch=3), epoch(split, seed=7, epoch=3)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = epoch(split, seed=7, epoch=4)
    assert any(not np.array_equal(xa, xo) for (xa, _), (xo, _) in zip(a, other))


def test_random_augmentation_is_seeded():
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (24, 20, 20, 3), dtype=np.uint8), np.repeat(np.arange(6), 4))
    kw = dict(augmentation="dmltf", image_size=8)
    a = epoch(split, seed=1, epoch=0, **kw)
    b = epoch(split, seed=1, epoch=0, **kw)
    c = epoch(split, seed=1, epoch=1, **kw)
    assert a[0][0].shape == (P * K, 8, 8, 3)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], c[0][0])


def test_replica_divisibility_and_shards():
    split = index_split()
    with pytest.raises(ValueError, match="a batch of 6 images in groups of 2 cannot be cut into 2 shares"):
        data.train_dataset(split, balanced(3, 2), seed=0, epoch=0, num_replicas=2)
    with pytest.raises(ValueError, match="classes_per_batch=8 exceeds the 7 classes"):
        data.train_dataset(split, balanced(8, 2), seed=0, epoch=0)
    full = [(x.numpy(), y.numpy()) for x, y in data.train_dataset(split, balanced(4, 2), seed=0, epoch=0, num_replicas=2)]
    shards = [[(x.numpy(), y.numpy()) for x, y in
               data.train_dataset(split, balanced(4, 2), seed=0, epoch=0, shard=(i, 2))] for i in range(2)]
    for step, (x, y) in enumerate(full):
        np.testing.assert_array_equal(np.concatenate([shards[0][step][0], shards[1][step][0]]), x)
        np.testing.assert_array_equal(np.concatenate([shards[0][step][1], shards[1][step][1]]), y)
        # Each replica's half holds whole class groups.
        for half in (y[:4], y[4:]):
            assert (half.reshape(2, 2) == half.reshape(2, 2)[:, :1]).all()


def test_eval_order_raw_labels_and_partial_batch():
    split = index_split()
    ds = data.eval_dataset(split, 8, preprocessing="raw")
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [len(y) for _, y in batches] == [8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate([indices_of(x) for x, _ in batches]), np.arange(29))
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), split.labels)


def test_grayscale_digits_none_preprocessing():
    images = (np.arange(4 * 64).reshape(4, 8, 8, 1) % 17).astype(np.uint8)
    x, _ = next(iter(data.eval_dataset(ArraySplit(images, [0, 0, 1, 1]), 4)))
    np.testing.assert_allclose(x.numpy(), images / 255.0, rtol=1e-6)


def write_split(path, fmt, encoding, images, labels):
    with DatasetWriter(path, format=fmt, encoding=encoding, class_names=[str(i) for i in range(labels.max() + 1)]) as w:
        w.begin_split("train", len(labels), images.shape[1:])
        for image, label in zip(images, labels):
            w.add(image, int(label))
        w.end_split()
    return open_dataset(path).split("train")


@pytest.mark.parametrize("fmt", ["hdf5", "tfrecord"])
def test_stored_splits_match_memory_and_stream(tmp_path, monkeypatch, fmt):
    y, x = np.mgrid[0:16, 0:16]
    images = np.clip((6 * y + 5 * x)[None, :, :, None] + np.arange(12)[:, None, None, None] * 8, 0, 255)
    images = np.repeat(images, 3, axis=-1).astype(np.uint8)
    labels = np.repeat(np.arange(4), 3)
    reference = epoch(ArraySplit(images, labels), seed=2)
    raw = write_split(str(tmp_path / "raw"), fmt, "raw", images, labels)
    for (xr, yr), (xe, ye) in zip(epoch(raw, seed=2), reference):
        np.testing.assert_array_equal(xr, xe)
        np.testing.assert_array_equal(yr, ye)
    jpeg = write_split(str(tmp_path / "jpeg"), fmt, "jpeg", images, labels)
    xj = np.concatenate([b.numpy() for b, _ in data.eval_dataset(jpeg, 5, preprocessing="raw")])
    assert np.abs(xj - images).mean() < 2.0
    monkeypatch.setenv("DMLTF_DATA_RAM_BYTES", "1")  # nothing fits in RAM now
    if fmt == "hdf5":
        streamed = open_dataset(str(tmp_path / "raw")).split("train")
        assert not streamed.fits_in_memory()
        for (xs, ys), (xe, ye) in zip(epoch(streamed, seed=2), reference):
            np.testing.assert_array_equal(xs, xe)
            np.testing.assert_array_equal(ys, ye)
        xe = np.concatenate([b.numpy() for b, _ in data.eval_dataset(streamed, 5, preprocessing="raw")])
        np.testing.assert_array_equal(xe, images)
    else:
        with pytest.raises(MemoryError, match="no random access; convert it to HDF5"):
            data.train_dataset(open_dataset(str(tmp_path / "raw")).split("train"), balanced(2, 2), seed=0, epoch=0)


def test_variable_size_jpeg_needs_image_size(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "v.h5")
    with DatasetWriter(path, encoding="jpeg", class_names=["a", "b"]) as w:
        w.begin_split("train")
        for i, shape in enumerate([(10, 12, 3), (14, 9, 3), (8, 8, 3), (11, 11, 3)]):
            w.add(rng.integers(0, 256, shape, dtype=np.uint8), i % 2)
        w.end_split()
    split = open_dataset(path).split("train")
    with pytest.raises(ValueError, match="unknown or varying size.*pass image_size"):
        data.eval_dataset(split, 2)
    with pytest.raises(ValueError, match="4 different sizes"):
        split.load()
    x, y = next(iter(data.train_dataset(split, balanced(2, 2), seed=0, epoch=0, augmentation="torch_imagenet",
                                        preprocessing="torch_imagenet", image_size=6)))
    assert x.shape == (4, 6, 6, 3) and sorted(y.numpy().tolist()) == [0, 0, 1, 1]


def test_mirrored_replicas_each_get_whole_class_groups():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    split = index_split()
    ds = data.train_dataset(split, balanced(4, 2), seed=5, epoch=0, preprocessing="raw", num_replicas=2)
    global_batches = [(x.numpy(), y.numpy()) for x, y in ds]
    for (x, y), (gx, gy) in zip(strategy.experimental_distribute_dataset(ds), global_batches):
        xs, ys = strategy.experimental_local_results(x), strategy.experimental_local_results(y)
        assert [len(r) for r in ys] == [4, 4]
        for labels in ys:  # two whole groups of K = 2 per replica
            assert (labels.numpy().reshape(2, 2)[:, 0] == labels.numpy().reshape(2, 2)[:, 1]).all()
        np.testing.assert_array_equal(np.concatenate([r.numpy() for r in ys]), gy)
        np.testing.assert_array_equal(np.concatenate([r.numpy() for r in xs]), gx)
