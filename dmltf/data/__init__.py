"""Data: on-disk formats, readers, the class-balanced sampler and the tf.data pipeline.

Modules:
    hdf5.py           the dmltf HDF5 format (layout in its docstring), writer backend, reader
    tfrecord.py       the dmltf TFRecord format (shards + metadata.json), writer backend, reader
    writer.py         DatasetWriter, the streaming writer the converters use
    splits.py         Split / ArraySplit / open_dataset, and when a split is held in RAM
    samplers/         batch samplers (a registry: balanced P x K, random, ...); what an epoch is
    augmentation.py   augmentation presets (none, dmltf, torch_imagenet, dvml, drml, drml_seed)
    preprocessing.py  backbone input preprocessing (none, raw, caffe_bgr, torch_imagenet, ...)
    pipeline.py       train_dataset / eval_dataset
    images.py         JPEG encoding and header checks for the writers

Example:
    >>> import numpy as np
    >>> from dmltf.data import ArraySplit
    >>> ArraySplit(np.zeros((2, 8, 8, 1), np.uint8), [0, 1]).num_classes
    2
"""
from dmltf.data import augmentation, preprocessing, samplers  # noqa: F401
from dmltf.data.pipeline import eval_dataset, train_dataset  # noqa: F401
from dmltf.data.splits import ArraySplit, Split, open_dataset  # noqa: F401
from dmltf.data.writer import DatasetWriter  # noqa: F401
