"""PaddlePaddle Fluid persistables -> resnet50_torch (``pretrained/resnet50_from_paddle.py``).

The parameter files are written here by a small writer of Paddle's LoDTensor serialisation
(``lod_tensor.cc`` SerializeToStream, ``tensor_util.cc`` TensorToStream), independent of the
reader; ``fixtures/paddle_written.tar.gz`` holds files written by Paddle itself
(``fixtures/make_paddle_fixture.py``). The forward check is a float64 numpy evaluation, in NCHW
with OIHW kernels and Paddle's explicit (k-1)//2 padding, of the first stage (conv1 + BN + ReLU
+ max pool) and of the bottlenecks res2a and res3a, against the converted backbone at an odd
and an even image side. Budget: ~30 s (one full conversion).
"""
import contextlib
import io
import os
import struct
import tarfile

import numpy as np
import pytest

from dmltf.models import backbones
from pretrained import common
from pretrained import resnet50_from_paddle as paddle_conv

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TYPE_IDS = {"bool": 0, "int16": 1, "int32": 2, "int64": 3, "float16": 4, "float32": 5, "float64": 6,
            "uint16": 22, "uint8": 20, "int8": 21}  # uint16: the bits of BF16 (22)


# --- a writer of Paddle's tensor files -------------------------------------------------------

def _varint(value):
    value &= (1 << 64) - 1  # negative int64: ten bytes, two's complement
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def paddle_bytes(array, lod=(), packed_dims=False, version=0):
    """``array`` serialised as Paddle writes one variable: LoDTensor version, LoD, then the tensor
    (version, TensorDesc length, TensorDesc, data). C++ protobuf writes the proto2 ``repeated
    int64 dims`` unpacked (one key per dim); ``packed_dims`` writes the packed form."""
    array = np.array(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    desc = b"\x08" + _varint(TYPE_IDS[array.dtype.name])
    if packed_dims:
        body = b"".join(_varint(d) for d in array.shape)
        desc += b"\x12" + _varint(len(body)) + body
    else:
        desc += b"".join(b"\x10" + _varint(d) for d in array.shape)
    out = struct.pack("<IQ", version, len(lod))
    for level in lod:
        out += struct.pack(f"<Q{len(level)}Q", 8 * len(level), *level)
    return out + struct.pack("<Ii", 0, len(desc)) + desc + array.astype(array.dtype.newbyteorder("<")).tobytes()


def write_variables(folder, arrays):
    os.makedirs(folder, exist_ok=True)
    for name, array in arrays.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(array if isinstance(array, bytes) else paddle_bytes(array))
    return str(folder)


# --- the variables of resnet_embedding.py's ResNet-50, from its structure --------------------

def paddle_resnet50_shapes():
    """name -> shape of every parameter and BN statistic of Paddle's ResNet50 (``conv_bn_layer``
    names ``<name>_weights`` and ``bn<name[3:]>_{scale,offset,mean,variance}``, ``bn_conv1_*``)."""
    shapes = {}

    def conv_bn(name, cout, cin, k):
        shapes[f"{name}_weights"] = (cout, cin, k, k)
        bn = "bn_conv1" if name == "conv1" else "bn" + name[3:]
        shapes.update({f"{bn}_{s}": (cout,) for s in ("scale", "offset", "mean", "variance")})

    conv_bn("conv1", 64, 3, 7)
    cin = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=2):
        for i in range(blocks):
            name = f"res{stage}{chr(97 + i)}"
            conv_bn(f"{name}_branch2a", width, cin, 1)
            conv_bn(f"{name}_branch2b", width, width, 3)
            conv_bn(f"{name}_branch2c", 4 * width, width, 1)
            if i == 0:  # ch_in != ch_out or stride 2: the projection shortcut
                conv_bn(f"{name}_branch1", 4 * width, cin, 1)
            cin = 4 * width
    return shapes


def draw_parameters(seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in paddle_resnet50_shapes().items():
        if name.endswith("_weights"):
            fan_in = shape[1] * shape[2] * shape[3]
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        elif name.endswith(("_scale", "_variance")):
            value = rng.uniform(0.5, 1.5 if name.endswith("_scale") else 2.0, shape)
        else:  # offset, mean
            value = rng.normal(0.0, 0.2, shape)
        arrays[name] = value.astype(np.float32)
    return arrays


# --- Paddle's forward in numpy, float64, NCHW -------------------------------------------------

def np_conv(x, w, stride):
    """Paddle conv2d with padding (k-1)//2 on both sides, no bias; x NCHW, w OIHW."""
    k = w.shape[2]
    pad = (k - 1) // 2
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
    return out


def np_bn(x, p, name, eps=1e-5):  # fluid batch_norm at test time, epsilon 1e-5
    g = lambda s: p[f"{name}_{s}"].astype(np.float64)[None, :, None, None]  # noqa: E731
    return (x - g("mean")) / np.sqrt(g("variance") + eps) * g("scale") + g("offset")


def np_conv_bn(x, p, name, stride=1, relu=True):
    bn = "bn_conv1" if name == "conv1" else "bn" + name[3:]
    y = np_bn(np_conv(x, p[f"{name}_weights"], stride), p, bn)
    return np.maximum(y, 0) if relu else y


def np_max_pool(x, k=3, s=2, pad=1):  # pool2d max, pool_padding 1: padding never wins
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    return np.stack([np.stack([x[:, :, i * s : i * s + k, j * s : j * s + k].max(axis=(2, 3)) for j in range(ow)], -1)
                     for i in range(oh)], -2)


def np_bottleneck(x, p, name, stride):
    y = np_conv_bn(x, p, f"{name}_branch2a")  # the 1x1: stride 1
    y = np_conv_bn(y, p, f"{name}_branch2b", stride)  # the 3x3 carries the stride
    y = np_conv_bn(y, p, f"{name}_branch2c", relu=False)
    short = np_conv_bn(x, p, f"{name}_branch1", stride, relu=False) if f"{name}_branch1_weights" in p else x
    return np.maximum(y + short, 0)


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def persistables(tmp_path_factory):
    """A fabricated ResNet50_pretrained folder, plus variables the backbone does not use."""
    params = draw_parameters()
    extra = {
        "fc_0.w_0": np.zeros((2048, 10), np.float32),  # the ImageNet tarball's classifier (2048, 1000)
        "fc_0.b_0": np.zeros(10, np.float32),
        "__model__": b"\x0a\x05not a tensor",  # never parsed: the backbone does not ask for it
    }
    folder = write_variables(tmp_path_factory.mktemp("paddle") / "ResNet50_pretrained", {**params, **extra})
    return params, folder


@pytest.fixture(scope="module")
def converted(persistables, tmp_path_factory):
    params, folder = persistables
    out = str(tmp_path_factory.mktemp("converted") / "resnet50_paddle.weights.h5")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        paddle_conv.main([folder, out])
    return params, out, printed.getvalue()


def _farm(tmp_path, folder, drop=(), replace=None):
    """A folder of symlinks to ``folder``'s files, without ``drop``, with ``replace`` written."""
    farm = tmp_path / "farm"
    farm.mkdir()
    for name in os.listdir(folder):
        if name not in drop and name not in (replace or {}):
            os.symlink(os.path.join(folder, name), farm / name)
    write_variables(farm, replace or {})
    return str(farm)


# --- the reader --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "array,lod,packed",
    [
        (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5, (), False),
        (np.arange(-6, 6, dtype=np.int64).reshape(6, 2) * (1 << 40), ([0, 2, 3], [0, 1, 4, 6]), True),
        (np.linspace(-1, 1, 7).astype(np.float16), ([0, 3, 7],), False),
        (np.array(2.5), (), False),  # 0-d
        (np.zeros((0, 4), np.int32), (), False),  # empty
    ],
)
def test_reader_round_trips_a_fabricated_file(tmp_path, array, lod, packed):
    path = tmp_path / "var"
    path.write_bytes(paddle_bytes(array, lod, packed_dims=packed))
    read, read_lod = paddle_conv.read_tensor_file(str(path))
    assert read.dtype == array.dtype and read.shape == array.shape
    np.testing.assert_array_equal(read, array)
    assert read_lod == [list(level) for level in lod]


def test_bfloat16_is_read_as_float32(tmp_path):
    values = np.array([1.0, -2.5, 2.0**127, 2.0**-100], np.float32)  # exact in bfloat16
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    path = tmp_path / "var"
    path.write_bytes(paddle_bytes(bits))  # written with data_type 22 (BF16)
    read, _ = paddle_conv.read_tensor_file(str(path))
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, values)


def test_tensor_desc_negative_dims_are_int64():
    desc = b"\x08\x05\x10" + _varint(-1) + b"\x10\x03"
    assert paddle_conv.parse_tensor_desc(desc) == (5, [-1, 3])


def expected_paddle_written():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_paddle_fixture", os.path.join(FIXTURES, "make_paddle_fixture.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.arrays(), module.LODS


def test_reader_reads_files_written_by_paddle():
    arrays, lods = expected_paddle_written()
    variables = paddle_conv.read_persistables(os.path.join(FIXTURES, "paddle_written.tar.gz"))
    assert sorted(variables) == sorted(arrays)
    for name, array in arrays.items():
        assert variables[name].dtype == array.dtype
        np.testing.assert_array_equal(variables[name], array)
    with tarfile.open(os.path.join(FIXTURES, "paddle_written.tar.gz")) as tar:
        blob = tar.extractfile("paddle_written/seq_ids").read()
    assert paddle_conv.parse_lod_tensor(blob)[1] == lods["seq_ids"]
    assert blob == paddle_bytes(arrays["seq_ids"], lods["seq_ids"])  # the test's writer is Paddle's format


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[:-3], "truncated in the data of a float32 tensor of shape (2, 3)"),
        (lambda b: b[:10], "truncated in the LoDTensor header"),
        (lambda b: b"\x07" + b[1:], "LoDTensor version 7, expected 0"),
        (lambda b: b"PK\x03\x04" + b[4:], "not a Paddle tensor file"),
        (lambda b: b + b, "bytes after the tensor: one file must hold one variable"),
        (lambda b: b[:20] + b"\x08\x63" + b[22:], "data type 99 is not a plain numeric type"),
    ],
)
def test_a_damaged_file_is_one_error_naming_it(tmp_path, damage, message):
    path = tmp_path / "res2a_branch2a_weights"
    path.write_bytes(damage(paddle_bytes(np.ones((2, 3), np.float32))))
    with pytest.raises(common.WeightFileError) as err:
        paddle_conv.read_tensor_file(str(path))
    assert str(err.value).startswith(f"{path}: not a Paddle tensor file (") and message in str(err.value)


def test_a_tar_and_a_folder_give_the_same_variables(tmp_path):
    arrays = {"conv1_weights": np.ones((2, 3, 1, 1), np.float32), "bn_conv1_mean": np.arange(2, dtype=np.float32)}
    folder = write_variables(tmp_path / "download" / "ResNet50_pretrained", arrays)
    with tarfile.open(tmp_path / "ResNet50_pretrained.tar", "w") as tar:
        tar.add(folder, arcname="ResNet50_pretrained")
    for source in (folder, str(tmp_path / "ResNet50_pretrained.tar")):
        variables = paddle_conv.read_persistables(source)
        assert sorted(variables) == sorted(arrays)
        assert all(np.array_equal(variables[k], v) for k, v in arrays.items())
    with pytest.raises(common.WeightFileError, match="may be in .*ResNet50_pretrained"):
        paddle_conv.read_persistables(str(tmp_path / "download"))  # the folder above the variables
    with tarfile.open(tmp_path / "damaged.tar", "w") as tar:
        tar.add(os.path.join(folder, "conv1_weights"), arcname="ResNet50_pretrained/conv1_weights")
        (tmp_path / "bn_conv1_mean").write_bytes(b"\x01" * 30)
        tar.add(tmp_path / "bn_conv1_mean", arcname="ResNet50_pretrained/bn_conv1_mean")
    variables = paddle_conv.read_persistables(str(tmp_path / "damaged.tar"))
    assert "bn_conv1_mean" in variables and variables["conv1_weights"].shape == (2, 3, 1, 1)
    with pytest.raises(common.WeightFileError, match=r"damaged\.tar:bn_conv1_mean: not a Paddle tensor file \(LoDTensor version"):
        variables["bn_conv1_mean"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(common.WeightFileError, match="neither a folder of Paddle persistables"):
        paddle_conv.read_persistables(str(tmp_path / "notes.txt"))


# --- names and the converted backbone ----------------------------------------------------------

def test_every_backbone_layer_has_its_paddle_variables():
    model = backbones.build("resnet50_torch", (224, 224, 3))
    assert model.output_shape == (None, 7, 7, 2048)  # before resnet_embedding's 7x7 global average pool
    keys = [key for layer in model.layers if layer.weights for key, _ in paddle_conv.paddle_layout(layer)]
    assert sorted(keys) == sorted(paddle_resnet50_shapes())  # one to one
    assert paddle_conv.paddle_prefix("layer3.5.conv2") == ("conv", "res4f_branch2b")
    assert paddle_conv.paddle_prefix("layer2.0.downsample.1") == ("bn", "bn3a_branch1")


def test_converted_weights_reproduce_paddles_forward(converted):
    import keras

    params, out, printed = converted
    assert f"wrote {out} (resnet50_torch)" in printed and "ignored 3 variable(s)" in printed and "fc_0.w_0" in printed
    for size in ((32, 35), (34, 32)):  # odd and even sides: Paddle's padding is not TF's "same"
        model = backbones.build("resnet50_torch", (*size, 3), weights=out)
        names = ("maxpool", "layer1.0.relu3", "layer1.2.relu3", "layer2.0.relu3")
        probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
        x = np.random.default_rng(1).standard_normal((2, *size, 3)).astype(np.float32)
        stem, res2a, res2c, res3a = (np.transpose(np.asarray(t, np.float64), (0, 3, 1, 2)) for t in probe(x))

        expected_stem = np_max_pool(np_conv_bn(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), params, "conv1", 2))
        expected_res2a = np_bottleneck(expected_stem, params, "res2a", 1)
        expected_res3a = np_bottleneck(res2c, params, "res3a", 2)  # from the backbone's res2c output
        for got, want in ((stem, expected_stem), (res2a, expected_res2a), (res3a, expected_res3a)):
            assert got.shape == want.shape
            assert np.abs(want).max() > 0.5  # not degenerate
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_missing_and_wrong_shaped_variables_fail_naming_them(persistables, tmp_path, capsys):
    params, folder = persistables
    farm = _farm(tmp_path, folder, drop={"res3a_branch2b_weights"},
                 replace={"bn4c_branch2a_variance": np.ones(5, np.float32),
                          "res2b_branch2c_weights": np.ones((256, 64, 3, 3), np.float32)})
    out = str(tmp_path / "out.weights.h5")
    with pytest.raises(SystemExit) as stop:
        paddle_conv.main([farm, out])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {farm} does not fit resnet50_torch (3 problem(s)):")
    assert "res3a_branch2b_weights: missing (layer layer2.0.conv2" in err
    assert "bn4c_branch2a_variance: shape (5,), expected (256,)" in err
    assert "res2b_branch2c_weights: shape (256, 64, 3, 3), expected (256, 64, 1, 1) (out, in, h, w)" in err
    assert not os.path.exists(out)


def test_a_damaged_variable_stops_the_conversion_naming_its_file(persistables, tmp_path, capsys):
    _, folder = persistables
    farm = _farm(tmp_path, folder, replace={"bn5c_branch2c_mean": paddle_bytes(np.ones(2048, np.float32))[:-8]})
    out = str(tmp_path / "out.weights.h5")
    with pytest.raises(SystemExit) as stop:
        paddle_conv.main([farm, out])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {os.path.join(farm, 'bn5c_branch2c_mean')}: not a Paddle tensor file (truncated")
    assert not os.path.exists(out)


def test_sha256_is_for_the_tar_not_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        paddle_conv.main([str(tmp_path), str(tmp_path / "out.weights.h5"), "--sha256", "0" * 64])
    assert stop.value.code == 2 and "pass the .tar itself" in capsys.readouterr().err
