"""Streaming dataset writer used by the converter CLIs (``datasets/*_converter.py``).

The writer validates every example, buffers a block of them and hands blocks to a format
backend (``hdf5.HDF5Writer`` or ``tfrecord.TFRecordWriter``; the formats are described in
those modules). Output goes to a hidden temporary name next to ``path`` and is renamed into
place only when the ``with`` block ends without an exception; on an exception the temporary
output is deleted, so nothing that looks valid is ever left at ``path``. A killed writer
cannot delete its temporary output: the next writer of the same ``path`` does
(:func:`remove_stale_partials`).

Example:
    >>> import os, tempfile, numpy as np
    >>> from dmltf.data import DatasetWriter, open_dataset
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.h5")
    >>> with DatasetWriter(path, class_names=["a", "b"], metadata={"source": "doc"}) as w:
    ...     w.begin_split("train", num_examples=2, image_shape=(4, 4, 3))
    ...     w.add(np.zeros((4, 4, 3), np.uint8), 0, super_label=0)
    ...     w.add(np.ones((4, 4, 3), np.uint8), 1, super_label=0)
    ...     w.end_split()
    >>> ds = open_dataset(path)
    >>> ds.split("train").labels.tolist(), ds.split("train").extra_labels["super_labels"].tolist()
    ([0, 1], [0, 0])

Extra labels: ``add(..., super_label=3)`` stores the field ``super_labels`` (keyword name plus
"s", as ``label`` is stored as ``labels``); every extra keyword must end in ``_label`` and every
example of a split must carry the same ones.
"""
import json
import os
import re
import shutil
import sys
import uuid

import numpy as np

from dmltf.data import images as imglib
from dmltf.data.hdf5 import HDF5Writer

FORMATS = ("hdf5", "tfrecord")
ENCODINGS = ("raw", "jpeg")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_BLOCK = 256  # examples buffered before a backend write (one h5py call per field per block)


def remove_path(path):
    """Deletes a file or a directory tree (missing is fine)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def partial_name(path, pid):
    """The hidden temporary name of a writer of ``path`` in process ``pid``."""
    parent, base = os.path.split(path)
    return os.path.join(parent, f".{base}.partial-{pid}-{uuid.uuid4().hex[:8]}")


def remove_stale_partials(path):
    """Deletes the temporary outputs that killed writers of ``path`` left beside it (those of
    processes still running are theirs) and says so in one line.

    The ``.old`` copy of a replaced output is stale once the new output is in place."""
    parent, base = os.path.split(path)
    pattern = re.compile(rf"\.{re.escape(base)}\.partial-(\d+)-[0-9a-f]{{8}}(\.old)?")
    stale = []
    for name in sorted(os.listdir(parent)):
        match = pattern.fullmatch(name)
        if match and not _running(int(match.group(1))) and (not match.group(2) or os.path.lexists(path)):
            stale.append(os.path.join(parent, name))
            remove_path(stale[-1])
    if stale:
        print(f"removed {len(stale)} stale temporary output(s) of an interrupted write of {path}: "
              f"{', '.join(os.path.basename(p) for p in stale)}", file=sys.stderr)


def _running(pid):
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


class DatasetWriter:
    """Writes named splits of (image, label, extra labels) to the dmltf HDF5 or TFRecord format.

    Args:
        path: output file (hdf5) or directory (tfrecord).
        format: ``"hdf5"`` or ``"tfrecord"``.
        encoding: ``"raw"`` (decoded uint8 [H, W, C], one shape per split) or ``"jpeg"``
            (encoded bytes; arrays given to ``add`` are encoded with ``jpeg_quality``).
        class_names: names indexed by class id; labels must lie in [0, len(class_names)).
            ``None`` stores no names and only checks labels >= 0.
        metadata: JSON-serialisable dict stored as is (source, skipped image count, ...). It is
            written at close, so entries known only at the end may be set on ``writer.metadata``.
        overwrite: replace an existing ``path`` (only once the new output is complete).
        jpeg_quality: quality used to encode arrays when ``encoding="jpeg"``.
        shard_bytes: TFRecord only, start a new shard once a shard reaches this many bytes.
    """

    def __init__(self, path, format="hdf5", encoding="raw", class_names=None, metadata=None,
                 overwrite=False, jpeg_quality=95, shard_bytes=256 * 2**20):
        if format not in FORMATS:
            raise ValueError(f"Unknown format {format!r}; valid formats: {', '.join(FORMATS)}")
        if encoding not in ENCODINGS:
            raise ValueError(f"Unknown encoding {encoding!r}; valid encodings: {', '.join(ENCODINGS)}")
        self.path = os.path.abspath(os.fspath(path))
        if os.path.lexists(self.path) and not overwrite:
            raise FileExistsError(f"{self.path} already exists; pass overwrite=True (--overwrite) to replace it")
        self.metadata = dict(metadata or {})
        self._check_metadata()
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.encoding = encoding
        self.jpeg_quality = int(jpeg_quality)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        remove_stale_partials(self.path)
        self._tmp = partial_name(self.path, os.getpid())
        kwargs = {"shard_bytes": shard_bytes} if format == "tfrecord" else {}
        if format == "hdf5":
            backend = HDF5Writer
        else:  # imported here: TensorFlow is needed for TFRecords only
            from dmltf.data.tfrecord import TFRecordWriter as backend
        self._out = backend(self._tmp, self.class_names, **kwargs)
        self._split = None
        self._done_splits = set()
        self._closed = False

    # -- splits ---------------------------------------------------------------------------
    def begin_split(self, name, num_examples=None, image_shape=None):
        """Starts split ``name``; ``num_examples`` (if given) is checked at ``end_split``.

        ``image_shape`` (H, W, C) is required for raw encoding; for JPEG it is optional and,
        when given, every image's header must match it.
        """
        if self._split is not None:
            raise RuntimeError(f"begin_split({name!r}) while split {self._split['name']!r} is open")
        if not _SPLIT_NAME.match(str(name)):
            raise ValueError(f"split name {name!r} must match {_SPLIT_NAME.pattern}")
        if name in self._done_splits:
            raise ValueError(f"split {name!r} was already written")
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)
            if len(image_shape) != 3 or image_shape[-1] not in (1, 3) or min(image_shape) < 1:
                raise ValueError(f"image_shape must be (H, W, C) with C in (1, 3), got {image_shape}")
        elif self.encoding == "raw":
            raise ValueError("image_shape=(H, W, C) is required for encoding='raw'")
        if num_examples is not None and int(num_examples) < 1:
            raise ValueError(f"split {name!r}: num_examples must be >= 1, got {num_examples}")
        self._split = {"name": name, "expected": num_examples, "shape": image_shape, "count": 0,
                       "extra": None, "images": [], "labels": [], "extras": []}
        self._out.begin_split(name, num_examples, image_shape, self.encoding)

    def add(self, image, label, **extra_labels):
        """Adds one example: a uint8 [H, W, C] array or JPEG bytes, its class id, extra labels.

        JPEG bytes are stored verbatim for ``encoding="jpeg"`` after a header check only (no full
        decode, for speed); for ``encoding="raw"`` they are decoded, so corrupt data fails here.
        """
        s = self._split
        if s is None:
            raise RuntimeError("add() outside begin_split()/end_split()")
        where = f"split {s['name']!r}, example {s['count']}"
        names = tuple(sorted(extra_labels))
        bad = [n for n in names if not n.endswith("_label")]
        if bad:
            raise ValueError(f"{where}: extra label keywords must end in '_label' (stored as "
                             f"'<name>s'), got {bad}")
        if s["extra"] is not None and names != s["extra"]:
            raise ValueError(f"{where}: extra labels {list(names)} differ from the split's {list(s['extra'])}")
        payload = self._payload(image, s["shape"], where)
        label = self._check_label(label, where, "label", self.class_names)
        extras = [self._check_label(extra_labels[n], where, n) for n in names]
        # State changes only once the example is known to be valid.
        s["extra"] = names
        s["images"].append(payload)
        s["labels"].append(label)
        s["extras"].append(extras)
        s["count"] += 1
        if len(s["images"]) >= _BLOCK:
            self._flush()

    def end_split(self):
        s = self._split
        if s is None:
            raise RuntimeError("end_split() without begin_split()")
        self._flush()
        if s["count"] == 0:
            raise ValueError(f"split {s['name']!r} has no examples")
        if s["expected"] is not None and s["count"] != int(s["expected"]):
            raise ValueError(f"split {s['name']!r}: begin_split said num_examples={s['expected']} "
                             f"but {s['count']} examples were added")
        self._out.end_split(s["count"], [n + "s" for n in s["extra"]])
        self._done_splits.add(s["name"])
        self._split = None

    # -- completion -----------------------------------------------------------------------
    def close(self):
        """Finishes the output and renames it into place (called by ``with`` on success)."""
        if self._closed:
            return
        if self._split is not None:
            self.abort()
            raise RuntimeError(f"split {self._split['name']!r} was not ended; output discarded")
        if not self._done_splits:
            self.abort()
            raise ValueError(f"no split was written; nothing saved at {self.path}")
        try:
            self._check_metadata()
        except ValueError:
            self.abort()
            raise
        self._out.close(self.metadata)
        self._closed = True
        if os.path.lexists(self.path):  # overwrite=True (checked in __init__)
            old = self._tmp + ".old"
            os.rename(self.path, old)
            os.rename(self._tmp, self.path)
            remove_path(old)
        else:
            os.rename(self._tmp, self.path)

    def abort(self):
        """Discards everything written so far."""
        if self._closed:
            return
        self._closed = True
        try:
            self._out.abort()
        finally:
            remove_path(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    # -- validation -----------------------------------------------------------------------
    def _payload(self, image, shape, where):
        """The stored form of ``image``: a uint8 array (raw) or JPEG bytes (jpeg)."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            try:
                decoded = imglib.decode_jpeg(data, shape[-1]) if self.encoding == "raw" else None
                got = imglib.jpeg_shape(data) if decoded is None else decoded.shape
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            self._check_shape(got, shape, where)
            return data if decoded is None else decoded
        array = imglib.check_uint8_hwc(image, f"{where}: image")
        self._check_shape(array.shape, shape, where)
        return array if self.encoding == "raw" else imglib.encode_jpeg(array, self.jpeg_quality)

    @staticmethod
    def _check_shape(got, shape, where):
        if shape is not None and tuple(got) != shape:
            raise ValueError(f"{where}: image shape {tuple(got)} differs from the split's image_shape {shape}")

    def _check_metadata(self):
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata must be JSON-serialisable: {e}") from None

    @staticmethod
    def _check_label(value, where, field, class_names=None):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{where}: {field} must be an integer, got {value!r}")
        value = int(value)
        if value < 0 or (class_names is not None and value >= len(class_names)):
            bound = "" if class_names is None else f" and < len(class_names) = {len(class_names)}"
            raise ValueError(f"{where}: {field} {value} must be >= 0{bound}")
        return value

    def _flush(self):
        s = self._split
        if not s["images"]:
            return
        extras = np.asarray(s["extras"], np.int64).reshape(len(s["images"]), len(s["extra"]))
        self._out.write_block(s["images"], np.asarray(s["labels"], np.int64),
                              {n + "s": extras[:, i] for i, n in enumerate(s["extra"])})
        s["images"], s["labels"], s["extras"] = [], [], []
