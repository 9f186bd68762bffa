"""The HDF5 file the DVML reference reads (``cars196_converter.py --layout dvml``).

Reference: Xun-Yang/Deep-Variational-Metric-Learning ``datasets/cars196_converter.py`` (after
sakurai's converter, also in wzzheng/HDML) and Fuel's ``H5PYDataset.create_split_array``
(mila-iqia/fuel ``fuel/datasets/hdf5.py``); METHODS.md section 1.6. Layout, field by field:

    images   uint8 (N, 3, 256, 256) RGB, contiguous; dims labelled batch, channel, height, width
    targets  int32 (N, 1), the original 1-based class ids; dims labelled batch, class_labels
    attrs["split"]  Fuel's split array: one row per (split, source) in the order
             (train, images), (train, targets), (test, images), (test, targets); fields
             split S{longest split name}, source S7, start <i8, stop <i8, indices (null HDF5
             object reference), available bool, comment S1 ('.').

Rows are sorted by class, so train = [0, first index of class 99) and test = [that, N).
Deviations: written under a temporary name and renamed when complete (the reference wrote in
place); pixels come from Pillow's decoder (libjpeg, as OpenCV's) and OpenCV's INTER_LINEAR
resize when OpenCV is installed, Pillow bilinear otherwise (pixels then differ slightly).

Example:
    >>> rows = fuel_split_array({"train": (0, 8054), "test": (8054, 16185)})
    >>> [(bytes(r["split"]), bytes(r["source"]), int(r["start"]), int(r["stop"])) for r in rows][:2]
    [(b'train', b'images', 0, 8054), (b'train', b'targets', 0, 8054)]
"""
import os

import h5py
import numpy as np

from dmltf.data.writer import partial_name, remove_stale_partials

SOURCES = ("images", "targets")  # sorted, as create_split_array sorts them
IMAGE_SHAPE = (256, 256, 3)


def fuel_split_array(split_ranges):
    """Fuel's ``H5PYDataset.create_split_array`` for {split: (start, stop)} over both sources."""
    dtype = np.dtype([
        ("split", "S%d" % max(len(s) for s in split_ranges)),
        ("source", "S%d" % max(len(s) for s in SOURCES)),
        ("start", np.int64),
        ("stop", np.int64),
        ("indices", h5py.ref_dtype),
        ("available", np.bool_),
        ("comment", "S1"),
    ])
    rows = [(split.encode(), source.encode(), start, stop, h5py.Reference(), True, b".")
            for split, (start, stop) in split_ranges.items() for source in SOURCES]
    return np.array(rows, dtype=dtype)


class DvmlWriter:
    """Writer with DatasetWriter's begin_split / add / end_split, producing the DVML file.

    ``num_examples`` is the total over all splits: the images array is preallocated, as in the
    reference, and copied to an exactly sized one if fewer images arrive (``--skip_bad``).
    ``add`` takes a uint8 [256, 256, 3] RGB array and the 0-based label; the file stores
    label + 1, the dataset's 1-based class id.
    """

    def __init__(self, path, num_examples, overwrite=False):
        self.path = os.path.abspath(os.fspath(path))
        if os.path.lexists(self.path) and not overwrite:
            raise FileExistsError(f"{self.path} already exists; pass --overwrite to replace it")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        remove_stale_partials(self.path)
        self._tmp = partial_name(self.path, os.getpid())
        self._file = h5py.File(self._tmp, "w")
        self._images = self._create_images(self._file, num_examples)
        self._targets = np.zeros((num_examples, 1), np.int32)
        self._count, self._ranges, self._split = 0, {}, None
        self.metadata = {}  # DatasetWriter's interface; the reference layout has no metadata

    def begin_split(self, name, num_examples=None, image_shape=None):
        if image_shape is not None and tuple(image_shape) != IMAGE_SHAPE:
            raise ValueError(f"the DVML layout stores {IMAGE_SHAPE} images, not {tuple(image_shape)}")
        self._split = (name, self._count)

    def add(self, image, label):
        image = np.asarray(image)
        if image.shape != IMAGE_SHAPE or image.dtype != np.uint8:
            raise ValueError(f"image {self._count}: expected uint8 {IMAGE_SHAPE}, got {image.dtype} {image.shape}")
        self._images[self._count] = image.transpose(2, 0, 1)
        self._targets[self._count, 0] = int(label) + 1
        self._count += 1

    def end_split(self):
        name, start = self._split
        self._ranges[name] = (start, self._count)
        self._split = None

    def _create_images(self, h5file, num_examples):
        images = h5file.create_dataset("images", (num_examples, 3) + IMAGE_SHAPE[:2], dtype=np.uint8)
        for dim, label in zip(images.dims, ("batch", "channel", "height", "width")):
            dim.label = label
        return images

    def _rewrite_images(self):
        """Copies the images into a new file with an exactly sized (contiguous) dataset."""
        tmp = self._tmp + ".exact"
        with h5py.File(tmp, "w") as exact:
            images = self._create_images(exact, self._count)
            for start in range(0, self._count, 256):
                images[start:start + 256] = self._images[start:min(start + 256, self._count)]
        self._file.close()
        os.replace(tmp, self._tmp)
        self._file = h5py.File(self._tmp, "a")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        complete = False
        try:
            if exc_type is None:
                if self._count < len(self._targets):  # images were skipped: shrink to the exact size
                    self._rewrite_images()
                targets = self._file.create_dataset("targets", data=self._targets[:self._count])
                targets.dims[0].label, targets.dims[1].label = "batch", "class_labels"
                self._file.attrs["split"] = fuel_split_array(self._ranges)
                complete = True
        finally:
            self._file.close()
            if complete:
                os.replace(self._tmp, self.path)
            for leftover in (self._tmp, self._tmp + ".exact"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        return False
