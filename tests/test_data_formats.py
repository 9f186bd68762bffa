"""HDF5 / TFRecord writing and reading: round trips, atomic output, bad-input messages."""
import os

import h5py
import numpy as np
import pytest

from dmltf.data import ArraySplit, DatasetWriter, open_dataset
from dmltf.data.images import encode_jpeg

FORMATS = ["hdf5", "tfrecord"]


def smooth_images(n, h=12, w=10, c=3, seed=0):
    """Gradients plus a per-image offset: JPEG reproduces them within a few levels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = (8 * y + 6 * x)[None, :, :, None] + rng.integers(0, 100, (n, 1, 1, c))
    return np.clip(base, 0, 255).astype(np.uint8)


def write(path, fmt, encoding, splits, class_names=("a", "b", "c"), metadata=None, **kwargs):
    with DatasetWriter(path, format=fmt, encoding=encoding, class_names=list(class_names),
                       metadata=metadata, **kwargs) as w:
        for name, (images, labels, extra) in splits.items():
            w.begin_split(name, num_examples=len(labels), image_shape=images.shape[1:])
            for i in range(len(labels)):
                w.add(images[i], labels[i], **{k: v[i] for k, v in extra.items()})
            w.end_split()


@pytest.mark.parametrize("fmt", FORMATS)
def test_raw_round_trip_is_exact(tmp_path, fmt):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (300, 5, 4, 3), dtype=np.uint8)  # > one 256-example write block
    test = rng.integers(0, 256, (7, 3, 3, 1), dtype=np.uint8)
    train_labels = rng.integers(0, 3, 300)
    meta = {"source": "unit test", "skipped_images": 2, "nested": {"a": [1, 2]}}
    path = str(tmp_path / "ds")
    write(path, fmt, "raw", {"train": (train, train_labels, {"super_label": train_labels % 2}),
                             "test": (test, np.arange(7) % 3, {})},
          metadata=meta, **({"shard_bytes": 4000} if fmt == "tfrecord" else {}))
    ds = open_dataset(path)
    assert ds.class_names == ["a", "b", "c"]
    assert ds.split_names == ["test", "train"]
    assert ds.metadata == meta
    s = ds.split("train")
    assert (s.encoding, s.image_shape, s.num_examples, s.num_classes) == ("raw", (5, 4, 3), 300, 3)
    np.testing.assert_array_equal(s.labels, train_labels)
    assert s.labels.dtype == np.int64
    np.testing.assert_array_equal(s.class_ids, [0, 1, 2])
    assert list(s.extra_labels) == ["super_labels"]
    np.testing.assert_array_equal(s.extra_labels["super_labels"], train_labels % 2)
    np.testing.assert_array_equal(s.load().images, train)
    np.testing.assert_array_equal(s.read_rows(np.array([299, 0, 5, 5])), train[[299, 0, 5, 5]])
    t = ds.split("test")
    np.testing.assert_array_equal(t.load().images, test)
    assert t.extra_labels == {}
    if fmt == "tfrecord":
        shards = sorted(f for f in os.listdir(path) if f.startswith("train-"))
        assert len(shards) > 1 and shards[-1].endswith(f"-of-{len(shards):05d}.tfrecord")


@pytest.mark.parametrize("fmt", FORMATS)
def test_jpeg_round_trip(tmp_path, fmt):
    images = smooth_images(6)
    given_bytes = encode_jpeg(images[0], quality=90)
    path = str(tmp_path / "ds")
    with DatasetWriter(path, format=fmt, encoding="jpeg", class_names=["a", "b"], jpeg_quality=95) as w:
        w.begin_split("train", num_examples=None, image_shape=None)
        w.add(given_bytes, 1)
        for i in range(1, 6):
            w.add(images[i], i % 2)
        w.end_split()
        w.metadata["skipped_images"] = 3  # known only at the end of a conversion
    assert open_dataset(path).metadata == {"skipped_images": 3}
    s = open_dataset(path).split("train")
    assert s.encoding == "jpeg" and s.image_shape is None
    assert s.read(0, 1)[0] == given_bytes  # encoded bytes are stored verbatim
    decoded = s.load().images
    assert decoded.shape == images.shape
    err = np.abs(decoded.astype(int) - images)
    assert err.mean() < 2.0 and err.max() <= 12, (err.mean(), err.max())
    np.testing.assert_array_equal(s.labels, [1, 1, 0, 1, 0, 1])


def test_raw_from_jpeg_bytes_and_grayscale(tmp_path):
    gray = smooth_images(2, c=1)
    path = str(tmp_path / "g.h5")
    with DatasetWriter(path, encoding="raw", class_names=None) as w:
        w.begin_split("all", 2, image_shape=(12, 10, 1))
        w.add(encode_jpeg(gray[0], 95), 4)  # bytes are decoded for raw storage
        w.add(gray[1], 7)
        w.end_split()
    ds = open_dataset(path)
    assert ds.class_names == []
    s = ds.split("all")
    np.testing.assert_array_equal(s.load().images[1], gray[1])
    assert np.abs(s.load().images[0].astype(int) - gray[0]).max() <= 8


@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_write_leaves_nothing(tmp_path, fmt):
    path = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(path, format=fmt, class_names=["a"]) as w:
            w.begin_split("train", 3, (2, 2, 3))
            w.add(np.zeros((2, 2, 3), np.uint8), 0)
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_protection(tmp_path, fmt):
    path = str(tmp_path / "out")
    one = {"train": (np.zeros((1, 2, 2, 3), np.uint8), np.array([0]), {})}
    write(path, fmt, "raw", one)
    with pytest.raises(FileExistsError, match="out.*overwrite"):
        DatasetWriter(path, format=fmt)
    two = {"train": (np.full((2, 2, 2, 3), 9, np.uint8), np.array([1, 2]), {})}
    # A failed overwrite keeps the old output.
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, format=fmt, overwrite=True) as w:
            w.begin_split("train", 1, (2, 2, 3))
            raise RuntimeError("converter crashed")
    assert open_dataset(path).split("train").num_examples == 1
    write(path, fmt, "raw", two, overwrite=True)
    np.testing.assert_array_equal(open_dataset(path).split("train").labels, [1, 2])
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_writer_rejects_bad_examples(tmp_path):
    with DatasetWriter(tmp_path / "x.h5", class_names=["a", "b"]) as w:
        with pytest.raises(ValueError, match="image_shape.*required"):
            w.begin_split("train")
        w.begin_split("train", 2, (4, 4, 3))
        with pytest.raises(ValueError, match=r"example 0: image shape \(4, 5, 3\) differs"):
            w.add(np.zeros((4, 5, 3), np.uint8), 0)
        with pytest.raises(ValueError, match="must be uint8"):
            w.add(np.zeros((4, 4, 3), np.float32), 0)
        with pytest.raises(ValueError, match=r"label 2 must be >= 0 and < len\(class_names\) = 2"):
            w.add(np.zeros((4, 4, 3), np.uint8), 2)
        with pytest.raises(ValueError, match="not a JPEG"):
            w.add(b"GIF89a....", 0)
        truncated = encode_jpeg(smooth_images(1, 4, 4)[0])[:-60]
        with pytest.raises(ValueError, match="split 'train', example 0: (corrupt JPEG|unreadable JPEG)"):
            w.add(truncated, 0)
        with pytest.raises(ValueError, match="must end in '_label'"):
            w.add(np.zeros((4, 4, 3), np.uint8), 0, category=1)
        w.add(np.zeros((4, 4, 3), np.uint8), 0, super_label=1)
        with pytest.raises(ValueError, match="differ from the split"):
            w.add(np.zeros((4, 4, 3), np.uint8), 0)
        with pytest.raises(ValueError, match="num_examples=2 but 1 examples"):
            w.end_split()
        w.add(np.zeros((4, 4, 3), np.uint8), 1, super_label=0)
        w.end_split()
    assert open_dataset(tmp_path / "x.h5").split("train").extra_labels["super_labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable"):
        DatasetWriter(tmp_path / "z.h5", metadata={"when": object()})
    with pytest.raises(ValueError, match="Unknown format 'zip'; valid formats: hdf5, tfrecord"):
        DatasetWriter(tmp_path / "y", format="zip")


def test_missing_dataset_names_the_converters(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        open_dataset(tmp_path / "cars196.h5")
    for script in ("cars196_converter.py", "cub200_converter.py", "sop_converter.py", "folder_converter.py"):
        assert f"datasets/{script}" in str(e.value)
    assert "cars196.h5" in str(e.value)
    os.mkdir(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        open_dataset(tmp_path / "empty")


def test_hdf5_bad_fields_name_file_and_field(tmp_path):
    path = str(tmp_path / "bad.h5")
    write(path, "hdf5", "raw", {"train": (np.zeros((3, 2, 2, 3), np.uint8), np.array([0, 1, 2]), {})})
    with h5py.File(path, "a") as f:
        f["splits/train/labels"].resize(2, axis=0)
    with pytest.raises(ValueError, match=r"bad\.h5: splits/train: 'images' has 3 entries but 'labels' has 2"):
        open_dataset(path).split("train")
    with h5py.File(path, "a") as f:
        del f["splits/train/labels"]
    with pytest.raises(ValueError, match=r"bad\.h5: splits/train has no 'labels' dataset"):
        open_dataset(path).split("train")
    with pytest.raises(KeyError, match="no split 'val'; valid splits: train"):
        open_dataset(path).split("val")
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ValueError, match="format_version 99; this dmltf reads up to 1"):
        open_dataset(path)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["images"] = np.zeros((2, 2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="plain.h5 is not a dmltf HDF5 file"):
        open_dataset(tmp_path / "plain.h5")


def test_array_split_checks_lengths():
    with pytest.raises(ValueError, match="'images' has 3 entries but labels has 2"):
        ArraySplit(np.zeros((3, 2, 2, 1), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="uint8"):
        ArraySplit(np.zeros((3, 2, 2, 1)), [0, 1, 2])


@pytest.mark.parametrize("fmt", FORMATS)
def test_jpeg_blocks_of_equal_byte_length(tmp_path, fmt):
    # One image, or images whose encodings all have the same length, once broke the HDF5 writer.
    same = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    path = str(tmp_path / "ds")
    with DatasetWriter(path, format=fmt, encoding="jpeg", class_names=["a"]) as w:
        w.begin_split("one", num_examples=1)
        w.add(same, 0)
        w.end_split()
        w.begin_split("two", num_examples=2)
        w.add(same, 0)
        w.add(same, 0)
        w.end_split()
    ds = open_dataset(path)
    assert ds.split("one").read(0, 1)[0] == same
    assert [bytes(b) for b in ds.split("two").read(0, 2)] == [same, same]
