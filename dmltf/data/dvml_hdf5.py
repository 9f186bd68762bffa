"""Reader of the DVML reference HDF5 file (``datasets/cars196_converter.py --layout dvml``).

Layout (METHODS.md 1.6; written by ``dmltf.data.raw.dvml``): ``images`` uint8 (N, 3, H, W) RGB,
``targets`` int32 (N, 1) 1-based class ids, and the Fuel split array in ``attrs["split"]``
(rows: split, source, start, stop, ...). Each Fuel split ("train", "test") becomes a
:class:`Split` over rows [start, stop) of ``images``, read as HWC (the transpose the reference's
``nn_Ops.batch_data`` applies) with the labels as stored, so a port consumes the same bytes as
its reference. Detected by :func:`dmltf.data.open_dataset` from the top-level fields.

Example:
    >>> import os, tempfile, numpy as np
    >>> from dmltf.data import open_dataset
    >>> from dmltf.data.raw.dvml import DvmlWriter
    >>> path = os.path.join(tempfile.mkdtemp(), "cars196.hdf5")
    >>> with DvmlWriter(path, 2) as w:
    ...     for name, label in (("train", 0), ("test", 98)):
    ...         w.begin_split(name); w.add(np.zeros((256, 256, 3), np.uint8), label); w.end_split()
    >>> ds = open_dataset(path)
    >>> ds.split_names, ds.split("test").labels.tolist(), ds.split("test").image_shape
    (['test', 'train'], [99], (256, 256, 3))
"""
import h5py
import numpy as np

from dmltf.data.hdf5 import HDF5Split
from dmltf.data.splits import Split, StoredDataset


def is_dvml_file(h5file):
    return "images" in h5file and "targets" in h5file and "split" in h5file.attrs


class _HwcRows:
    """Rows [start, stop) of an (N, C, H, W) dataset, indexed like it but returned as HWC."""

    def __init__(self, images, start, stop):
        self._images, self._start, self._stop = images, start, stop
        self.shape = (stop - start, *images.shape[2:], images.shape[1])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            return self._images[self._start + start:self._start + stop].transpose(0, 2, 3, 1)
        return self._images[self._start + int(index)].transpose(1, 2, 0)


class DvmlSplit(HDF5Split):
    """One Fuel split of a DVML file; reading is HDF5Split's (contiguous row reads)."""

    def __init__(self, path, name, images, labels, start, stop):
        self._images = _HwcRows(images, start, stop)
        Split.__init__(self, name, labels, "raw", self._images.shape[1:])
        self.path = path


class DvmlDataset(StoredDataset):
    """An open DVML reference file: splits by the Fuel split array, no class names."""

    def __init__(self, path):
        self._file = h5py.File(path, "r")
        images, targets = self._file["images"], self._file["targets"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{path}: 'images' must be uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
        if targets.ndim != 2 or targets.shape[1] != 1 or not np.issubdtype(targets.dtype, np.integer):
            raise ValueError(f"{path}: 'targets' must be integer (N, 1), got {targets.dtype} {targets.shape}")
        if len(targets) != len(images):
            raise ValueError(f"{path}: 'targets' has {len(targets)} rows but 'images' has {len(images)}")
        self._labels = targets[:, 0].astype(np.int64)
        self._ranges = self._split_ranges(path, self._file.attrs["split"], len(images))
        super().__init__(path, [], sorted(self._ranges), {"layout": "dvml"})

    @staticmethod
    def _split_ranges(path, rows, n):
        """{split: (start, stop)} from Fuel's split array; both sources must agree."""
        ranges = {}
        for row in rows:
            split, source = row["split"].decode(), row["source"].decode()
            start, stop = int(row["start"]), int(row["stop"])
            if not 0 <= start <= stop <= n:
                raise ValueError(f"{path}: attrs['split'] row ({split}, {source}) has rows [{start}, {stop}) "
                                 f"outside the {n} images")
            if ranges.setdefault(split, (start, stop)) != (start, stop):
                raise ValueError(f"{path}: attrs['split'] gives split {split!r} different ranges per source: "
                                 f"{ranges[split]} and ({start}, {stop}) for {source!r}")
        if not ranges:
            raise ValueError(f"{path}: attrs['split'] names no split")
        return ranges

    def _open_split(self, name):
        start, stop = self._ranges[name]
        return DvmlSplit(self.path, name, self._file["images"], self._labels[start:stop], start, stop)

    def close(self):
        self._file.close()
