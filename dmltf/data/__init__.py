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

The names below are imported on first use (module ``__getattr__``, PEP 562): the converters
write HDF5 through ``DatasetWriter`` without importing TensorFlow (3-9 s), which only the
pipeline, the augmentations, the preprocessing and the TFRecord format need.

Example:
    >>> import numpy as np
    >>> from dmltf.data import ArraySplit
    >>> ArraySplit(np.zeros((2, 8, 8, 1), np.uint8), [0, 1]).num_classes
    2
"""
import importlib

# public name -> (module, attribute or None for the module itself)
_LAZY = {
    "augmentation": ("dmltf.data.augmentation", None),
    "preprocessing": ("dmltf.data.preprocessing", None),
    "samplers": ("dmltf.data.samplers", None),
    "train_dataset": ("dmltf.data.pipeline", "train_dataset"),
    "eval_dataset": ("dmltf.data.pipeline", "eval_dataset"),
    "ArraySplit": ("dmltf.data.splits", "ArraySplit"),
    "Split": ("dmltf.data.splits", "Split"),
    "open_dataset": ("dmltf.data.splits", "open_dataset"),
    "DatasetWriter": ("dmltf.data.writer", "DatasetWriter"),
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
