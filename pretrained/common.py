"""Shared machinery of the weight converters: read a reference weight file into numpy arrays,
check the checksum, copy the arrays into a dmltf backbone with shape checks, and write the Keras
``.weights.h5`` file under a temporary name that is renamed when complete.

Layouts: a *layout* maps a Keras layer to the source keys of its weights, in the order of
``layer.weights``, each with a kind: ``"kernel"`` (OIHW in the source, Caffe's and PyTorch's
layout, transposed (2, 3, 1, 0) to Keras' HWIO) or ``"vector"`` (biases, BatchNorm parameters
and statistics; singleton axes such as a .mat row vector or the (1, C) BatchNorm tensors of
``bn_inception-52deb4733.pth`` are squeezed).
"""
import argparse
import hashlib
import os

import numpy as np

TORCH_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


class WeightFileError(ValueError):
    """A weight file that does not fit the backbone (names the file, keys and shapes)."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path, expected):
    """Compare the file's sha256 with ``expected`` (the full digest or a prefix of >= 8 hex
    digits, as torch.hub file names carry)."""
    if os.path.isdir(path):
        raise WeightFileError(f"--sha256 checks a file: pass the .tar itself rather than the folder {path}")
    expected = expected.strip().lower()
    if len(expected) < 8 or any(c not in "0123456789abcdef" for c in expected):
        raise WeightFileError(f"--sha256 must be hex digits (at least 8), got {expected!r}")
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise WeightFileError(f"{path}: sha256 is {actual}, expected {expected}")
    return actual


def read_mat(path):
    """The arrays of a MATLAB .mat file (scipy), without scipy's ``__header__``-style entries."""
    import scipy.io

    return {k: np.asarray(v) for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}


def read_state_dict(path):
    """A PyTorch state dict as numpy arrays, from a ``.pth`` (needs torch) or an ``.npz`` of the
    same keys. Unwraps ``{"state_dict": ...}`` and strips DataParallel's ``module.`` prefix."""
    if path.endswith(".npz"):
        with np.load(path) as data:
            state = {k: data[k] for k in data.files}
    else:
        try:
            import torch
        except ImportError:
            raise ImportError(
                f"Reading {path} needs PyTorch, only for this one-off conversion: `pip install torch` "
                "(the CPU build is enough), or save the state dict as .npz elsewhere with "
                "numpy.savez(out, **{k: v.numpy() for k, v in torch.load(path).items()})."
            ) from None
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        state = {k: v.detach().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def torch_layout(layer):
    """Source keys of a layer named after its PyTorch module path (``<name>.weight``, ...)."""
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{layer.name}.{k}", "vector") for k in TORCH_BN_KEYS]
    if isinstance(layer, keras.layers.Conv2D):
        return [(f"{layer.name}.weight", "kernel"), (f"{layer.name}.bias", "vector")][: len(layer.weights)]
    raise WeightFileError(f"no source layout for layer {layer.name!r} ({type(layer).__name__})")


def _source_array(key, kind, array, target_shape):
    """The array in Keras layout, or an error message naming the key and both shapes."""
    if kind == "kernel":
        h, w, i, o = target_shape
        expected = (o, i, h, w)
        if array.shape != expected:
            return None, f"{key}: shape {array.shape}, expected {expected} (out, in, h, w)"
        return np.transpose(array, (2, 3, 1, 0)), None
    vector = array.reshape(-1) if sum(d != 1 for d in array.shape) <= 1 else array
    if vector.shape != tuple(target_shape):
        return None, f"{key}: shape {array.shape}, expected {tuple(target_shape)}"
    return vector, None


def assign_weights(model, arrays, layout, source):
    """Copy ``arrays`` into every weighted layer of ``model``; returns the unused keys.

    All missing keys and shape mismatches are collected and raised together."""
    problems, used = [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        for variable, (key, kind) in zip(layer.weights, layout(layer)):
            if key not in arrays:
                problems.append(f"{key}: missing (layer {layer.name}, Keras shape {tuple(variable.shape)})")
                continue
            value, problem = _source_array(key, kind, np.asarray(arrays[key]), tuple(variable.shape))
            if problem:
                problems.append(problem)
            else:
                variable.assign(value.astype(variable.dtype))
                used.add(key)
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise WeightFileError(f"{source} does not fit {model.name} ({len(problems)} problem(s)):\n  {shown}")
    return sorted(set(arrays) - used)


def save_weights_atomically(model, out_path):
    """``model.save_weights`` to a temporary name in the same folder, renamed when complete."""
    suffix = ".weights.h5"
    if not out_path.endswith(suffix):
        raise WeightFileError(f"output {out_path!r} must end with {suffix} (Keras' weights format)")
    tmp = f"{out_path[: -len(suffix)]}.tmp{os.getpid()}{suffix}"
    try:
        model.save_weights(tmp)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_weights(read, path):
    """``read(path)``; a file the reader cannot parse (truncated, another format) is one
    WeightFileError naming it, whatever the reader's own exception."""
    try:
        return read(path)
    except (WeightFileError, ImportError):
        raise
    except Exception as e:  # noqa: BLE001 (scipy, numpy and torch each raise their own kinds)
        raise WeightFileError(f"{path} cannot be read by {read.__name__}: {type(e).__name__}: {e}") from None


def convert(backbone, in_path, out_path, read, layout, sha256=None):
    """Read ``in_path``, fill the registry backbone ``backbone``, write ``out_path``.

    Returns the keys of the file that the backbone does not use (e.g. the classifier)."""
    from dmltf.models import backbones

    if not os.path.exists(in_path):
        raise FileNotFoundError(f"{in_path}: no such file")
    if sha256:
        verify_sha256(in_path, sha256)
    spec = backbones.get_spec(backbone)
    model = backbones.build(backbone, (spec.image_size, spec.image_size, 3))
    unused = assign_weights(model, read_weights(read, in_path), layout, in_path)
    save_weights_atomically(model, out_path)
    return unused


def main(description, backbone, read, layout, argv=None, *, input_help="the reference weight file", unused_noun="key"):
    """The command line of a converter: ``IN OUT [--sha256 HEX]``; ``unused_noun`` names what
    the reference holds (keys of a state dict, variables of a Paddle folder) in the report of
    those the backbone does not use."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="the Keras weights file to write (*.weights.h5)")
    parser.add_argument("--sha256", help="expected sha256 of the input (full, or a prefix of >= 8 hex digits)")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's native start-up notices on stderr (see dmltf/startup.py)")
    args = parser.parse_args(argv)
    try:
        unused = convert(backbone, args.input, args.output, read, layout, args.sha256)
    except (WeightFileError, ImportError, FileNotFoundError) as e:
        parser.exit(2, f"error: {e}\n")
    print(f"wrote {args.output} ({backbone})")
    counters = [k for k in unused if k.endswith("num_batches_tracked")]
    others = [k for k in unused if k not in counters]
    if others:
        print(f"ignored {len(others)} {unused_noun}(s) the backbone does not use: {', '.join(others[:8])}" + (" ..." if len(others) > 8 else ""))
    if counters:
        print(f"ignored {len(counters)} BatchNorm num_batches_tracked counter(s)")
