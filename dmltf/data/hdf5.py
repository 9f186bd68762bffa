"""The dmltf HDF5 format (format_version 1): one file, one group per named split.

Layout::

    /                           attrs: dmltf_format = "hdf5", format_version = 1,
                                       metadata = JSON object (free: source, skipped_images, ...)
    /class_names                utf-8 strings [num_class_names]; class_names[label] names a label
                                (absent when the writer was given no class names)
    /splits/<name>/             one group per split (train, test, ...);
                                attrs: encoding ("raw" | "jpeg"), num_examples,
                                       image_shape [H, W, C] (always for raw, optional for jpeg),
                                       extra_labels = names of the extra label fields
    /splits/<name>/images       raw:  uint8 [N, H, W, C] (RGB, or C = 1 grayscale), chunked by
                                      whole images so a row read is one contiguous chunk read
                                jpeg: variable-length uint8 [N], each the bytes of one JPEG file
    /splits/<name>/labels       int64 [N], the dataset's class ids (>= 0)
    /splits/<name>/<x>_labels   int64 [N], optional extra label fields (e.g. super_labels, SOP)

Written by :class:`dmltf.data.DatasetWriter` (``format="hdf5"``), read by
:func:`dmltf.data.open_dataset`. Reads use contiguous slices (``ds[a:b]``, one row at a time
when streaming), never h5py fancy indexing, which is slow.
"""
import json
import os

import h5py
import numpy as np

from dmltf.data.splits import Split, StoredDataset, reading

FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")


class HDF5Writer:
    """Backend of DatasetWriter: appends blocks of validated examples to an HDF5 file."""

    def __init__(self, path, class_names):
        self._file = h5py.File(path, "w")
        self._file.attrs["dmltf_format"] = "hdf5"
        self._file.attrs["format_version"] = FORMAT_VERSION
        if class_names is not None:
            self._file.create_dataset("class_names", data=np.array(class_names, dtype=object), dtype=_STR)
        self._splits = self._file.create_group("splits")

    def begin_split(self, name, num_examples, image_shape, encoding):
        n = int(num_examples or 0)
        g = self._group = self._splits.create_group(name)
        g.attrs["encoding"] = encoding
        if image_shape is not None:
            g.attrs["image_shape"] = np.asarray(image_shape, np.int64)
        if encoding == "raw":
            rows = max(1, 2**20 // int(np.prod(image_shape)))  # ~1 MiB chunks of whole images
            g.create_dataset("images", (n, *image_shape), np.uint8, maxshape=(None, *image_shape),
                             chunks=(min(rows, max(n, 1)), *image_shape))
        else:
            g.create_dataset("images", (n,), h5py.vlen_dtype(np.uint8), maxshape=(None,), chunks=(256,))
        self._create_int64(g, "labels", n)
        self._count = 0

    @staticmethod
    def _create_int64(group, name, n):
        group.create_dataset(name, (n,), np.int64, maxshape=(None,), chunks=(4096,))

    def write_block(self, images, labels, extra_labels):
        g, start = self._group, self._count
        end = start + len(labels)
        for name in extra_labels:
            if name not in g:
                self._create_int64(g, name, g["labels"].shape[0])
        for name in ("images", "labels", *extra_labels):
            if g[name].shape[0] < end:
                g[name].resize(end, axis=0)
        if isinstance(images[0], bytes):
            block = np.empty(len(images), object)
            for i, b in enumerate(images):
                block[i] = np.frombuffer(b, np.uint8)
            # write_direct: slice assignment would read equal-length rows as one 2-D array
            g["images"].write_direct(block, dest_sel=np.s_[start:end])
        else:
            g["images"][start:end] = np.stack(images)
        g["labels"][start:end] = labels
        for name, values in extra_labels.items():
            g[name][start:end] = values
        self._count = end

    def end_split(self, count, extra_names):
        g = self._group
        for name in ("images", "labels", *extra_names):
            g[name].resize(count, axis=0)
        g.attrs["num_examples"] = count
        g.attrs["extra_labels"] = np.array(extra_names, dtype=object).astype(_STR) if extra_names else []

    def close(self, metadata):
        self._file.attrs["metadata"] = json.dumps(metadata)
        self._file.close()

    def abort(self):
        self._file.close()


class HDF5Split(Split):
    """A split of a dmltf HDF5 file; labels are read at open, images on demand."""

    def __init__(self, file, path, name):
        where = f"{path}: splits/{name}"
        g = file["splits"][name]
        for field in ("images", "labels"):
            if field not in g:
                raise ValueError(f"{where} has no '{field}' dataset (fields present: {sorted(g)})")
        self._images = g["images"]
        encoding = g.attrs.get("encoding", "raw")
        shape = tuple(int(s) for s in g.attrs["image_shape"]) if "image_shape" in g.attrs else None
        if encoding == "raw":
            if self._images.dtype != np.uint8 or self._images.ndim != 4:
                raise ValueError(f"{where}/images must be uint8 [N, H, W, C] for raw encoding, got "
                                 f"{self._images.dtype} {self._images.shape}")
            shape = tuple(self._images.shape[1:])
        extra_names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("extra_labels", [])]
        labels = self._read_int64(g, "labels", where)
        extras = {n: self._read_int64(g, n, where) for n in extra_names}
        for field, values in [("images", self._images), *extras.items()]:
            if len(values) != len(labels):
                raise ValueError(f"{where}: '{field}' has {len(values)} entries but 'labels' has "
                                 f"{len(labels)}")
        super().__init__(name, labels, encoding, shape, extras)
        self.path = path

    @staticmethod
    def _read_int64(group, field, where):
        if field not in group:
            raise ValueError(f"{where} has no '{field}' dataset (fields present: {sorted(group)})")
        values = group[field][:]
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{where}/{field} must be a 1-D integer array, got {values.dtype} {values.shape}")
        return values.astype(np.int64)

    @property
    def stored_bytes(self):
        if self.encoding == "raw":
            return int(np.prod(self._images.shape))
        return os.path.getsize(self.path)  # upper bound: h5py cannot size variable-length data cheaply

    def read(self, start, stop):
        with reading(self.path):
            images = self._images[start:stop]
        return images if self.encoding == "raw" else _bytes_array(images)

    def read_rows(self, indices):
        indices = np.asarray(indices)
        if len(indices) and np.array_equal(indices, np.arange(indices[0], indices[0] + len(indices))):
            return self.read(int(indices[0]), int(indices[0]) + len(indices))  # one slice (eval order)
        # One contiguous read per distinct row, in increasing order, then scattered back.
        unique, inverse = np.unique(indices, return_inverse=True)
        with reading(self.path):
            rows = [self._images[int(i)] for i in unique]
        if self.encoding == "raw":
            return np.stack(rows)[inverse]
        return _bytes_array(rows)[inverse]


def _bytes_array(rows):
    out = np.empty(len(rows), object)
    out[:] = [r.tobytes() for r in rows]
    return out


class HDF5Dataset(StoredDataset):
    """An open dmltf HDF5 file (kept open while the object lives)."""

    def __init__(self, path):
        with reading(path):
            self._file = h5py.File(path, "r")
        if "splits" not in self._file:
            raise ValueError(f"{path} is not a dmltf HDF5 file: no 'splits' group (top-level fields: "
                             f"{sorted(self._file)}); write it with a datasets/*_converter.py script")
        version = int(self._file.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {version}; this dmltf reads up to {FORMAT_VERSION}")
        names = ([n.decode() if isinstance(n, bytes) else n for n in self._file["class_names"][:]]
                 if "class_names" in self._file else [])
        metadata = json.loads(self._file.attrs.get("metadata", "{}"))
        super().__init__(path, names, sorted(self._file["splits"]), metadata)

    def _open_split(self, name):
        with reading(self.path):  # the labels are read here
            return HDF5Split(self._file, self.path, name)

    def close(self):
        self._file.close()

