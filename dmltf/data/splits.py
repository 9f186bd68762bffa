"""Splits (labels + images) and datasets (named splits + class names + metadata).

A :class:`Split` always holds its labels in memory; its images are either in RAM or read on
demand. The rule (``Split.fits_in_memory``): a split whose stored images (uint8 pixels for
raw, encoded bytes for JPEG) take at most :func:`memory_budget` bytes is read into RAM once,
on first use by the pipeline; a larger HDF5 split is streamed, one contiguous row read per
image. TFRecord splits have no random access, so the pipeline always reads them into RAM and
refuses one that does not fit (convert it to HDF5 instead).

Example:
    >>> import numpy as np
    >>> from dmltf.data import ArraySplit
    >>> s = ArraySplit(np.zeros((4, 8, 8, 1), np.uint8), [3, 3, 7, 9])
    >>> s.num_examples, s.class_ids.tolist(), s.num_classes, s.image_shape
    (4, [3, 7, 9], 3, (8, 8, 1))
"""
import contextlib
import os

import numpy as np

CONVERTERS = ("datasets/cars196_converter.py", "datasets/cub200_converter.py",
              "datasets/sop_converter.py", "datasets/folder_converter.py")


class DatasetError(ValueError):
    """A dataset file that cannot be read (e.g. truncated or damaged); the message names the file."""


class UnknownSplitError(KeyError, ValueError):
    """A split name the dataset does not hold: a failed lookup, and a bad flag value (the entry
    points print ValueErrors as one line)."""

    def __str__(self):
        return self.args[0]  # KeyError's own str() quotes the message


@contextlib.contextmanager
def reading(path):
    """Turns the OSError that h5py raises while opening or reading ``path`` (a truncated or
    damaged file, ...) into a one-line DatasetError naming the file."""
    try:
        yield
    except OSError as e:
        # h5py's reason says which (a permission is not damage): the file is named either way.
        raise DatasetError(f"{path} cannot be read ({e}); if it is truncated or damaged, write it again "
                           f"with its converter") from None


def memory_budget():
    """Bytes a split's images may take to be held in RAM.

    ``$DMLTF_DATA_RAM_BYTES`` if set, else half of the memory available when called.
    """
    if os.environ.get("DMLTF_DATA_RAM_BYTES"):
        return int(os.environ["DMLTF_DATA_RAM_BYTES"])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # sysconf names missing on some platforms
        return 2**32


class Split:
    """Labels, extra labels and access to the images of one split.

    Attributes:
        name, labels (int64 [N]), num_examples, class_ids (sorted unique labels), num_classes,
        extra_labels (dict name -> int64 [N]), encoding ("raw" or "jpeg"),
        image_shape ((H, W, C), or None for JPEG of unknown / varying size).
    """

    def __init__(self, name, labels, encoding, image_shape, extra_labels=None):
        self.name = name
        self.labels = np.asarray(labels, np.int64)
        self.encoding = encoding
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.extra_labels = {k: np.asarray(v, np.int64) for k, v in (extra_labels or {}).items()}
        self.class_ids = np.unique(self.labels)
        self._cache = None
        self.eval_cache = {}  # pipeline.eval_dataset's cached transforms: key -> tf.data dataset

    @property
    def num_examples(self):
        return len(self.labels)

    @property
    def num_classes(self):
        return len(self.class_ids)

    @property
    def stored_bytes(self):
        """Bytes of the stored images (pixels for raw, encoded bytes for JPEG)."""
        raise NotImplementedError

    def read(self, start, stop):
        """Images [start, stop): uint8 [n, H, W, C] (raw) or an object array of JPEG bytes."""
        raise NotImplementedError

    def read_rows(self, indices):
        """Images at ``indices`` (any order, repeats allowed), same types as :meth:`read`."""
        raise NotImplementedError

    def fits_in_memory(self):
        return self.stored_bytes <= memory_budget()

    def reader(self):
        """``fetch(indices) -> images``: from RAM if the split fits (read once), else streamed."""
        if self.fits_in_memory():
            if self._cache is None:
                self._cache = self.read(0, self.num_examples)
            cache = self._cache
            return lambda indices: cache[indices]
        return self.read_rows

    def load(self):
        """The whole split in memory as an :class:`ArraySplit` (JPEG decoded; sizes must agree)."""
        images = self.read(0, self.num_examples)
        if self.encoding == "jpeg":
            from dmltf.data.pipeline import decode_all

            channels = self.image_shape[-1] if self.image_shape else 3
            images = decode_all(images, channels, f"split {self.name!r}")
        return ArraySplit(images, self.labels, self.extra_labels, name=self.name)

    def __repr__(self):
        return (f"{type(self).__name__}({self.name!r}, num_examples={self.num_examples}, "
                f"num_classes={self.num_classes}, encoding={self.encoding!r}, image_shape={self.image_shape})")


class ArraySplit(Split):
    """An in-memory split: uint8 images [N, H, W, C] (C = 1 or 3) and int labels [N]."""

    def __init__(self, images, labels, extra_labels=None, name="array"):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"ArraySplit images must be uint8 [N, H, W, C] with C in (1, 3), got "
                             f"{images.dtype} {images.shape}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"ArraySplit labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        for field, values in [("images", images), *(extra_labels or {}).items()]:
            if len(values) != len(labels):
                raise ValueError(f"ArraySplit: '{field}' has {len(values)} entries but labels has {len(labels)}")
        super().__init__(name, labels, "raw", images.shape[1:], extra_labels)
        self.images = images

    @property
    def stored_bytes(self):
        return self.images.nbytes

    def read(self, start, stop):
        return self.images[start:stop]

    def read_rows(self, indices):
        return self.images[indices]

    def reader(self):
        return self.read_rows

    def load(self):
        return self


class StoredDataset:
    """Named splits with class names and metadata; ``split(name)`` opens one (cached)."""

    def __init__(self, path, class_names, split_names, metadata):
        self.path = path
        self.class_names = list(class_names)
        self.split_names = list(split_names)
        self.metadata = metadata
        self._opened = {}

    def split(self, name):
        if name not in self.split_names:
            raise UnknownSplitError(f"{self.path} has no split {name!r}; valid splits: {', '.join(self.split_names)}")
        if name not in self._opened:
            self._opened[name] = self._open_split(name)
        return self._opened[name]

    def _open_split(self, name):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.path!r}, splits={self.split_names}, classes={len(self.class_names)})"


def open_dataset(path):
    """Opens a dmltf HDF5 file or TFRecord directory (detected from what ``path`` is)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"dataset {path} does not exist; create it with one of the converters: "
            + ", ".join(f"python {c}" for c in CONVERTERS))
    if os.path.isdir(path):
        from dmltf.data.tfrecord import TFRecordDataset

        return TFRecordDataset(path)
    import h5py

    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is neither an HDF5 file nor a TFRecord directory with metadata.json")
    from dmltf.data.dvml_hdf5 import DvmlDataset, is_dvml_file
    from dmltf.data.hdf5 import HDF5Dataset

    with reading(path), h5py.File(path, "r") as f:
        dvml = is_dvml_file(f)
    return DvmlDataset(path) if dvml else HDF5Dataset(path)
