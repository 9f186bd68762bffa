"""Convert PaddlePaddle Fluid ResNet-50 persistables to the weights of dmltf's resnet50_torch.

The persistables are PaddlePaddle's ImageNet ``ResNet50_pretrained`` or a checkpoint of
PaddlePaddle/models' metric_learning (``train_elem.py`` / ``train_pair.py``). Input: the folder
that ``fluid.io.save_persistables`` / ``save_vars`` wrote, one file per variable named after it,
or the ``.tar`` holding such a folder (``ResNet50_pretrained.tar`` as downloaded; ``--sha256``
checks a tar, not a folder). Read with numpy alone, no Paddle needed.

Network: ``PaddleCV/metric_learning/models/resnet_embedding.py`` builds the function that
``resnet50_torch`` computes (stride in the 3x3 conv, 1x1 conv + BN shortcut when the shape
changes, explicit (k-1)//2 padding, max pool 3x3/2 pad 1, BatchNorm epsilon 1e-5, momentum
0.9): only the names differ. Paddle names -> dmltf layers:

    conv1_weights                                    conv1 (OIHW, transposed to HWIO)
    bn_conv1_{scale,offset,mean,variance}            bn1 (gamma, beta, moving mean, variance)
    res{2..5}{a..f}_branch2{a,b,c}_weights           layer{1..4}.{0..5}.conv{1,2,3}
    bn{2..5}{a..f}_branch2{a,b,c}_*                  layer{1..4}.{0..5}.bn{1,2,3}
    res{2..5}a_branch1_weights, bn{2..5}a_branch1_*  layer{1..4}.0.downsample.{0,1}

Other variables (the ImageNet classifier ``fc_0.w_0`` / ``fc_0.b_0``, the metric-learning
classifier ``weight_norm``, optimizer state such as ``*_velocity_0`` and ``learning_rate_0``) are
ignored without being parsed.

File layout of one variable (Paddle's LoDTensor serialisation, little-endian as written on x86):
``uint32`` LoDTensor version (0); ``uint64`` LoD level count, then per level a ``uint64`` byte
count and that many bytes of ``uint64`` offsets; the tensor: ``uint32`` version (0), ``int32``
byte length of a ``VarType.TensorDesc`` protobuf (field 1 ``data_type``, field 2 repeated int64
``dims``, unpacked as C++ protobuf writes it; packed is read too), the protobuf, then the raw
row-major data (``prod(dims) * itemsize`` bytes). Paddle's ``framework/lod_tensor.cc``
(SerializeToStream / DeserializeFromStream), ``framework/tensor_util.cc`` (TensorToStream /
TensorFromStream) and ``framework/framework.proto`` (``VarType.Type``, ``TensorDesc``); files
written by Paddle 3.3.1 have the same layout.

    python -m pretrained.resnet50_from_paddle ResNet50_pretrained resnet50_torch.weights.h5
    python -m pretrained.resnet50_from_paddle ResNet50_pretrained.tar resnet50_torch.weights.h5
"""
import os
import re
import tarfile
from collections.abc import Mapping

import numpy as np

from pretrained import common

BACKBONE = "resnet50_torch"

# framework.proto ``VarType.Type`` -> numpy dtype of the raw data (the plain-old-data types).
PADDLE_DTYPES = {
    0: np.dtype("bool"),
    1: np.dtype("<i2"),
    2: np.dtype("<i4"),
    3: np.dtype("<i8"),
    4: np.dtype("<f2"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    19: np.dtype("<u8"),  # SIZE_T
    20: np.dtype("u1"),
    21: np.dtype("i1"),
    22: np.dtype("<u2"),  # BF16: read as its 16 bits, returned as float32
    23: np.dtype("<c8"),
    24: np.dtype("<c16"),
}
BF16 = 22
MAX_LOD_LEVELS = 64  # far above any real tensor; a larger count means the file is not a LoDTensor


def _varint(buf, pos, what):
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"TensorDesc truncated inside {what}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"TensorDesc has an over-long varint in {what}")


def _int64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_tensor_desc(buf):
    """``(data_type, dims)`` of a serialised ``VarType.TensorDesc`` (dims packed or not)."""
    data_type, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, "a field key")
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, f"field {field}")
            if field == 1:
                data_type = value
            elif field == 2:
                dims.append(_int64(value))
        elif wire == 2:
            length, pos = _varint(buf, pos, f"the length of field {field}")
            end = pos + length
            if end > len(buf):
                raise ValueError(f"TensorDesc truncated inside field {field}")
            while field == 2 and pos < end:  # packed dims
                value, pos = _varint(buf[:end], pos, "dims")
                dims.append(_int64(value))
            pos = end
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"TensorDesc has protobuf wire type {wire} (field {field})")
    if data_type is None:
        raise ValueError("TensorDesc has no data_type")
    return data_type, dims


def _take(data, pos, size, what):
    if size < 0 or pos + size > len(data):
        raise ValueError(f"truncated in {what}: needs {size} bytes at offset {pos}, the file has {len(data)}")
    return data[pos : pos + size], pos + size


def parse_lod_tensor(data):
    """``(array, lod)`` of the LoDTensor serialised in ``data`` (bytes); ``lod`` is a list of
    offset lists, empty for a plain tensor (all parameters).

    Raises ValueError, saying what is wrong, for anything that is not exactly one LoDTensor."""
    header, pos = _take(data, 0, 12, "the LoDTensor header")
    version, levels = int(np.frombuffer(header[:4], "<u4")[0]), int(np.frombuffer(header[4:], "<u8")[0])
    if version != 0:
        raise ValueError(f"LoDTensor version {version}, expected 0: not a Paddle tensor file")
    if levels > MAX_LOD_LEVELS:
        raise ValueError(f"{levels} LoD levels: not a Paddle tensor file")
    lod = []
    for level in range(levels):
        raw, pos = _take(data, pos, 8, f"the size of LoD level {level}")
        size = int(np.frombuffer(raw, "<u8")[0])
        if size % 8:
            raise ValueError(f"LoD level {level} has {size} bytes, not a multiple of 8")
        raw, pos = _take(data, pos, size, f"LoD level {level}")
        lod.append(np.frombuffer(raw, "<u8").tolist())
    raw, pos = _take(data, pos, 8, "the tensor header")
    version, desc_size = int(np.frombuffer(raw[:4], "<u4")[0]), int(np.frombuffer(raw[4:], "<i4")[0])
    if version != 0:
        raise ValueError(f"tensor version {version}, expected 0")
    desc, pos = _take(data, pos, desc_size, "the TensorDesc")
    data_type, dims = parse_tensor_desc(desc)
    if data_type not in PADDLE_DTYPES:
        raise ValueError(f"data type {data_type} is not a plain numeric type")
    if any(d < 0 for d in dims):
        raise ValueError(f"dims {dims} have an unknown (negative) size")
    dtype = PADDLE_DTYPES[data_type]
    count = int(np.prod(dims, dtype=np.int64))
    raw, pos = _take(data, pos, count * dtype.itemsize, f"the data of a {dtype.name} tensor of shape {tuple(dims)}")
    if pos != len(data):
        raise ValueError(
            f"{len(data) - pos} bytes after the tensor: one file must hold one variable (a file saved with "
            "filename=... holds all of them without their names; save one file per variable instead)")
    array = np.frombuffer(raw, dtype).reshape(dims).copy()
    if data_type == BF16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array, lod


def _parse(data, where):
    try:
        return parse_lod_tensor(data)
    except ValueError as e:
        raise common.WeightFileError(f"{where}: not a Paddle tensor file ({e})") from None


def read_tensor_file(path):
    """``(array, lod)`` of one Paddle tensor file; a WeightFileError naming the file."""
    with open(path, "rb") as f:
        return _parse(f.read(), path)


class PaddleVariables(Mapping):
    """The variables of a persistables folder (or of a tar holding one), by name.

    A variable's file is parsed when it is first looked up, so files the backbone does not use
    (``__model__``, optimizer state) are never parsed."""

    def __init__(self, path):
        self.path, self._cache, self._blobs = path, {}, None
        if os.path.isdir(path):
            names = sorted(os.listdir(path))
            self._where = {n: os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))}
            if not self._where:
                folders = [n for n in names if os.path.isdir(os.path.join(path, n))]
                hint = f"; the variables may be in {os.path.join(path, folders[0])}" if len(folders) == 1 else ""
                raise common.WeightFileError(f"{path}: a folder without files, expected one file per Paddle variable{hint}")
        elif tarfile.is_tarfile(path):
            self._blobs = {}
            with tarfile.open(path) as tar:
                for member in (m for m in tar.getmembers() if m.isfile()):
                    name = member.name.rsplit("/", 1)[-1]
                    if name in self._blobs:
                        raise common.WeightFileError(f"{path}: two members named {name!r}, expected one folder of variables")
                    self._blobs[name] = tar.extractfile(member).read()
            self._where = {n: f"{path}:{n}" for n in sorted(self._blobs)}
        else:
            raise common.WeightFileError(
                f"{path}: neither a folder of Paddle persistables (one file per variable) nor a tar of one")

    def __getitem__(self, name):
        if name not in self._cache:
            where = self._where[name]  # KeyError for a variable that is not there
            if self._blobs is None:
                self._cache[name] = read_tensor_file(where)[0]
            else:
                self._cache[name] = _parse(self._blobs[name], where)[0]
        return self._cache[name]

    def __contains__(self, name):  # without parsing (Mapping's default would)
        return name in self._where

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)


def read_persistables(path):
    """The variables of a Paddle persistables folder or tar (see :class:`PaddleVariables`)."""
    return PaddleVariables(path)


_LAYER = re.compile(r"layer(\d)\.(\d+)\.(conv(\d)|bn(\d)|downsample\.(\d))$")


def paddle_prefix(layer_name):
    """``(kind, prefix)`` of a ``resnet50_torch`` layer: its Paddle variable names are
    ``<prefix>_weights`` (a conv) or ``<prefix>_{scale,offset,mean,variance}`` (a BatchNorm)."""
    if layer_name == "conv1":
        return "conv", "conv1"
    if layer_name == "bn1":
        return "bn", "bn_conv1"
    match = _LAYER.match(layer_name)
    if not match:
        return None, None
    stage, block = int(match.group(1)) + 1, chr(ord("a") + int(match.group(2)))
    if match.group(6) is not None:  # downsample.0 (conv), downsample.1 (BN)
        kind, branch = ("conv", "bn")[int(match.group(6))], "branch1"
    else:
        kind = "conv" if match.group(4) else "bn"
        branch = "branch2" + "abc"[int(match.group(4) or match.group(5)) - 1]
    return kind, f"{'res' if kind == 'conv' else 'bn'}{stage}{block}_{branch}"


def paddle_layout(layer):
    """Source keys of a ``resnet50_torch`` layer, in Paddle's names (see the module doc)."""
    kind, prefix = paddle_prefix(layer.name)
    if kind == "conv" and len(layer.weights) == 1:
        return [(f"{prefix}_weights", "kernel")]
    if kind == "bn":
        return [(f"{prefix}_{k}", "vector") for k in ("scale", "offset", "mean", "variance")]
    raise common.WeightFileError(f"no Paddle variable for layer {layer.name!r} ({type(layer).__name__})")


def main(argv=None):
    common.main(__doc__.splitlines()[0], BACKBONE, read_persistables, paddle_layout, argv,
                input_help="the folder of Paddle persistables (one file per variable), or a tar of it",
                unused_noun="variable")


if __name__ == "__main__":
    main()
