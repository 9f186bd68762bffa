"""Weight converters (pretrained/) and the forward equivalence of the ported backbones.

The reference outputs come from tests/fixtures/make_backbone_fixtures.py (torch definitions of
the BVLC GoogLeNet, the DVML port's GoogLeNet, Cadene's BN-Inception and torchvision's
ResNet-50, run once in a separate venv). Here the same weights are regenerated from the seed
with numpy, written in the real file layout, converted, loaded into the dmltf backbone and
compared: max abs difference <= 1e-4. No torch at test time (the .pth test is skipped without
it). Budget: ~60 s.
"""
import hashlib
import importlib.util
import os
import sys

import numpy as np
import pytest
import scipy.io

from dmltf.models import backbones
from pretrained import common
from pretrained.googlenet_from_caffe import caffe_mat_layout

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
_spec = importlib.util.spec_from_file_location("make_backbone_fixtures", os.path.join(FIXTURES, "make_backbone_fixtures.py"))
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

# backbone -> (registry backbone the converter targets, file suffix, reader, layout)
MAT = ("googlenet", ".mat", common.read_mat, caffe_mat_layout)
TORCH = (".npz", common.read_state_dict, common.torch_layout)
CASES = {
    "googlenet": MAT,
    "googlenet_dvml": MAT,  # the googlenet weights file serves both
    "bn_inception": ("bn_inception",) + TORCH,
    "resnet50_torch": ("resnet50_torch",) + TORCH,
}


def _load_fixture(name):
    data = dict(np.load(os.path.join(FIXTURES, f"{name}.npz")))
    arrays = fixtures.draw_weights(
        data["keys"], fixtures.unpack_shapes(data["shapes"]), data["kinds"], int(data["seed"]), float(data["gain"])
    )
    return data, arrays


def _write(arrays, path):
    if path.endswith(".mat"):
        scipy.io.savemat(path, arrays)
    else:
        np.savez(path, **arrays)
    return path


def _convert(name, arrays, tmp_path, sha256=None):
    target, suffix, read, layout = CASES[name]
    src = _write(arrays, str(tmp_path / f"{name}{suffix}"))
    out = str(tmp_path / f"{name}.weights.h5")
    return src, out, common.convert(target, src, out, read, layout, sha256=sha256)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_reference(name, tmp_path):
    data, arrays = _load_fixture(name)
    if name == "bn_inception":
        # as in bn_inception-52deb4733.pth, BatchNorm vectors stored as (1, C)
        arrays = {k: v[None] if "_bn." in k and v.ndim == 1 else v for k, v in arrays.items()}
    _, out, unused = _convert(name, arrays, tmp_path)
    x = data["input"]
    model = backbones.build(name, x.shape[1:], weights=out)
    features = np.asarray(model(x, training=False))
    assert features.shape == data["features"].shape
    pooled = features.mean(axis=(1, 2))
    assert np.abs(pooled).max() > 1.0  # the fixture is not degenerate
    assert np.abs(pooled - data["pooled"]).max() <= 1e-4
    assert np.abs(features - data["features"]).max() <= 1e-4 * max(1.0, np.abs(data["features"]).max())
    assert all(k.startswith(("fc.", "last_linear.")) or k.endswith("num_batches_tracked") for k in unused)


def test_mat_with_missing_key_and_wrong_shape_fails_naming_them(tmp_path):
    _, arrays = _load_fixture("googlenet")
    del arrays["inception_4c/5x5_bias"]
    arrays["inception_3a/3x3"] = arrays["inception_3a/3x3"][:, :, :2]  # (128, 96, 2, 3)
    with pytest.raises(common.WeightFileError) as err:
        _convert("googlenet", arrays, tmp_path)
    message = str(err.value)
    assert "inception_4c/5x5_bias: missing" in message
    assert "inception_3a/3x3: shape (128, 96, 2, 3), expected (128, 96, 3, 3)" in message
    assert not any(f.endswith(".weights.h5") for f in os.listdir(tmp_path))


def test_state_dict_with_missing_key_and_wrong_shape_fails_naming_them(tmp_path):
    _, arrays = _load_fixture("bn_inception")
    del arrays["inception_5b_3x3_bn.running_var"]
    arrays["conv2_3x3_bn.bias"] = arrays["conv2_3x3_bn.bias"][:100]
    with pytest.raises(common.WeightFileError) as err:
        _convert("bn_inception", arrays, tmp_path)
    message = str(err.value)
    assert "inception_5b_3x3_bn.running_var: missing" in message
    assert "conv2_3x3_bn.bias: shape (100,), expected (192,)" in message
    assert not any(f.endswith(".weights.h5") for f in os.listdir(tmp_path))


def test_checksum_is_verified(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"dmltf")
    digest = common.sha256_of(str(path))
    assert digest == hashlib.sha256(b"dmltf").hexdigest()
    assert common.verify_sha256(str(path), digest) == digest
    assert common.verify_sha256(str(path), digest[:8].upper()) == digest
    with pytest.raises(common.WeightFileError, match="sha256 is"):
        common.verify_sha256(str(path), "0" * 64)
    with pytest.raises(common.WeightFileError, match="at least 8"):
        common.verify_sha256(str(path), "abc")


def test_wrong_checksum_stops_the_conversion(tmp_path):
    with pytest.raises(common.WeightFileError, match="sha256 is"):
        _convert("googlenet", {"x": np.zeros(1, np.float32)}, tmp_path, sha256="0" * 64)
    assert not any(f.endswith(".weights.h5") for f in os.listdir(tmp_path))


@pytest.mark.parametrize("reader,suffix", [(common.read_mat, ".mat"), (common.read_state_dict, ".npz")])
def test_an_unreadable_weight_file_is_one_error_naming_it(tmp_path, capsys, reader, suffix):
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(b"not a weight file")
    out = str(tmp_path / "out.weights.h5")
    layout = caffe_mat_layout if reader is common.read_mat else common.torch_layout
    with pytest.raises(SystemExit) as stop:
        common.main("test", "googlenet", reader, layout, [str(path), out])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} cannot be read by {reader.__name__}: ") and err.count("\n") == 1
    assert not os.path.exists(out)


def test_pth_without_torch_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match="needs PyTorch"):
        common.read_state_dict(str(tmp_path / "bn_inception.pth"))


def test_pth_reading_path(tmp_path):
    torch = pytest.importorskip("torch")
    arrays = {"conv1.weight": np.ones((2, 3, 1, 1), np.float32), "bn1.running_var": np.arange(2, dtype=np.float32)}
    path = str(tmp_path / "w.pth")
    torch.save({"state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in arrays.items()}}, path)
    read = common.read_state_dict(path)
    assert read.keys() == arrays.keys() and all(np.array_equal(read[k], arrays[k]) for k in arrays)
