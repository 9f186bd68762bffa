"""The dmltf TFRecord format (format_version 1): a directory of shards plus ``metadata.json``.

Layout::

    <dir>/metadata.json                     {"dmltf_format": "tfrecord", "format_version": 1,
                                             "class_names": [...], "metadata": {...free...},
                                             "splits": {"<name>": {"encoding": "raw" | "jpeg",
                                                 "num_examples": N, "image_shape": [H, W, C] | null,
                                                 "extra_labels": ["super_labels", ...],
                                                 "shards": [{"file": ..., "num_examples": n}, ...]}}}
    <dir>/<name>-00000-of-00003.tfrecord    uncompressed TFRecord files, examples in write order

Each record is a ``tf.train.Example`` with the features
``image`` (bytes: the JPEG file, or for raw the uint8 pixels in C order), ``shape`` (int64 [3],
H, W, C; raw only), ``label`` (int64, the dataset's class id) and one int64 feature per extra
label field (e.g. ``super_labels``). A new shard starts once a shard reaches ``shard_bytes``.

TFRecords have no random access: the class-balanced sampler needs one, so a split's records are
read into RAM when the pipeline first uses them (see ``splits.py``); labels are read at open.
"""
import json
import os

import numpy as np
import tensorflow as tf

from dmltf.data.splits import Split, StoredDataset, memory_budget

FORMAT_VERSION = 1
METADATA = "metadata.json"
_READ_BATCH = 1024


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


class TFRecordWriter:
    """Backend of DatasetWriter: writes size-capped shards and, on close, metadata.json."""

    def __init__(self, path, class_names, shard_bytes):
        os.makedirs(path)
        self._dir = path
        self._shard_bytes = int(shard_bytes)
        self._meta = {"dmltf_format": "tfrecord", "format_version": FORMAT_VERSION,
                      "class_names": class_names or [], "metadata": {}, "splits": {}}
        self._file = None

    def begin_split(self, name, num_examples, image_shape, encoding):
        self._split = {"name": name, "encoding": encoding,
                       "image_shape": None if image_shape is None else list(image_shape), "shards": []}

    def _next_shard(self):
        self._close_shard()
        shard = {"file": f"{self._split['name']}-{len(self._split['shards']):05d}.tfrecord", "num_examples": 0}
        self._split["shards"].append(shard)
        self._file = tf.io.TFRecordWriter(os.path.join(self._dir, shard["file"]))
        self._written = 0

    def _close_shard(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def write_block(self, images, labels, extra_labels):
        for i, image in enumerate(images):
            if self._file is None or self._written >= self._shard_bytes:
                self._next_shard()
            feature = {"label": _int64([labels[i]])}
            if isinstance(image, bytes):
                feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
            else:
                feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()]))
                feature["shape"] = _int64(image.shape)
            for name, values in extra_labels.items():
                feature[name] = _int64([values[i]])
            record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            self._file.write(record)
            self._written += len(record)
            self._split["shards"][-1]["num_examples"] += 1

    def end_split(self, count, extra_names):
        self._close_shard()
        split, shards = self._split, self._split["shards"]
        for i, shard in enumerate(shards):  # final names carry the shard count
            final = f"{split['name']}-{i:05d}-of-{len(shards):05d}.tfrecord"
            os.rename(os.path.join(self._dir, shard["file"]), os.path.join(self._dir, final))
            shard["file"] = final
        self._meta["splits"][split.pop("name")] = {**split, "num_examples": count, "extra_labels": extra_names}

    def close(self, metadata):
        self._meta["metadata"] = metadata
        with open(os.path.join(self._dir, METADATA), "w") as f:
            json.dump(self._meta, f, indent=1)

    def abort(self):
        self._close_shard()


class TFRecordSplit(Split):
    """A split of a dmltf TFRecord directory; labels are read at open (one pass over the shards)."""

    def __init__(self, directory, name, info):
        self._where = f"{directory}: split {name!r}"
        self._files = [os.path.join(directory, s["file"]) for s in info["shards"]]
        missing = [f for f in self._files if not os.path.exists(f)]
        if missing:
            raise FileNotFoundError(f"{self._where}: missing shard files {missing}")
        self._extra_names = list(info.get("extra_labels", []))
        encoding = info["encoding"]
        self._features = {"image": tf.io.FixedLenFeature([], tf.string),
                          "label": tf.io.FixedLenFeature([], tf.int64),
                          **{n: tf.io.FixedLenFeature([], tf.int64) for n in self._extra_names}}
        columns = self._scan(("label", *self._extra_names))
        labels = columns["label"]
        if len(labels) != info["num_examples"]:
            raise ValueError(f"{self._where}: metadata.json says num_examples={info['num_examples']} but "
                             f"the shards hold {len(labels)} records")
        super().__init__(name, labels, encoding, info.get("image_shape"),
                         {n: columns[n] for n in self._extra_names})

    def _scan(self, keys, start=0, stop=None):
        features = {k: self._features[k] for k in keys}
        ds = tf.data.TFRecordDataset(self._files).skip(start)
        if stop is not None:
            ds = ds.take(stop - start)
        ds = ds.batch(_READ_BATCH).map(lambda r: tf.io.parse_example(r, features))
        chunks = {k: [] for k in keys}
        for batch in ds.as_numpy_iterator():
            for k in keys:
                chunks[k].append(batch[k])
        return {k: (np.concatenate(v) if v else np.zeros(0, np.int64 if k != "image" else object))
                for k, v in chunks.items()}

    @property
    def stored_bytes(self):
        return sum(os.path.getsize(f) for f in self._files)

    def read(self, start, stop):
        data = self._scan(("image",), start, stop)["image"]
        if self.encoding == "jpeg":
            return data
        shape = self.image_shape
        return np.frombuffer(b"".join(data), np.uint8).reshape(len(data), *shape)

    def reader(self):
        if not self.fits_in_memory():
            raise MemoryError(f"{self._where} takes {self.stored_bytes} bytes, more than the "
                              f"{memory_budget()} bytes the pipeline may hold in RAM, and TFRecords have no "
                              f"random access; convert it to HDF5 (--format hdf5) or raise $DMLTF_DATA_RAM_BYTES")
        return super().reader()

    def read_rows(self, indices):
        return self.reader()(indices)


class TFRecordDataset(StoredDataset):
    """A dmltf TFRecord directory."""

    def __init__(self, path):
        meta_path = os.path.join(path, METADATA)
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"{path} is a directory without {METADATA}, so not a dmltf TFRecord "
                                    f"dataset; write one with a datasets/*_converter.py script (--format tfrecord)")
        with open(meta_path) as f:
            meta = json.load(f)
        if "splits" not in meta:
            raise ValueError(f"{meta_path} has no 'splits' field (fields: {sorted(meta)})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{meta_path} has format_version {meta['format_version']}; this dmltf reads up to "
                             f"{FORMAT_VERSION}")
        self._meta = meta
        super().__init__(path, meta.get("class_names", []), sorted(meta["splits"]), meta.get("metadata", {}))

    def _open_split(self, name):
        return TFRecordSplit(self.path, name, self._meta["splits"][name])
