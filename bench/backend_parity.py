"""Every registered loss's value and gradient on this Keras backend, against another backend's run.

dmltf's losses are ``keras.ops``; CI checks them on TensorFlow and JAX. This script extends the
check to any backend that is installed (PyTorch too, which dmltf never depends on): run it once
per backend on the same inputs, then compare the files.

    KERAS_BACKEND=tensorflow python bench/backend_parity.py --output /tmp/tf.npz
    KERAS_BACKEND=torch python bench/backend_parity.py --output /tmp/torch.npz --compare /tmp/tf.npz

Inputs: a ragged batch (9 samples of 5 classes, singletons included, 6-d, float32, seed 0); each
loss with its defaults (proxy losses: 5 classes, their weights drawn from the same seed);
gradients with respect to the embeddings and the loss's weights. Prints one line per loss and
the largest relative differences; exits 1 if any exceeds --rtol.
"""
import argparse
import os
import sys

import keras
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from dmltf import losses  # noqa: E402
from recorded_losses import value_and_gradients  # noqa: E402  (the tests' helper, on every backend)

SKIPPED = {"multiple_losses"}  # a sum of other losses: nothing of its own to compare
CLASSES, DIM = 5, 6
LABELS = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4])


def build(name):
    cls = losses.get_class(name)
    kwargs = {"num_classes": CLASSES, "embedding_dim": DIM} if issubclass(cls, losses.ProxyLoss) else {}
    if name == "xbm":
        kwargs = {"memory_size": 16, "warmup_steps": 0, "embedding_dim": DIM}  # built before any trace
    loss = cls(**kwargs)
    rng = np.random.default_rng(1)
    for v in loss.trainable_weights:
        v.assign(rng.normal(size=tuple(v.shape)).astype("float32"))
    return loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help=".npz of this backend's values and gradients")
    parser.add_argument("--compare", help="another backend's .npz to compare with")
    parser.add_argument("--rtol", type=float, default=1e-4)
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(len(LABELS), DIM)).astype("float32")
    arrays = {}
    for name in losses.names():
        if name in SKIPPED:
            continue
        loss = build(name)
        value, (grad_x,), grad_w = value_and_gradients(lambda x: loss(LABELS, x), [x], loss.trainable_variables,
                                                       loss.non_trainable_variables)
        arrays[f"{name}__value"] = np.array(value)
        for i, g in enumerate([grad_x, *grad_w]):
            arrays[f"{name}__grad{i}"] = g
    tmp = args.output + ".partial.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, args.output)
    print(f"{keras.backend.backend()}: {len([k for k in arrays if k.endswith('__value')])} losses -> {args.output}")
    if not args.compare:
        return
    other = np.load(args.compare)
    worst, failed = 0.0, []
    for key, mine in sorted(arrays.items()):
        theirs = other[key]
        scale = max(float(np.abs(theirs).max()), 1e-6)
        diff = float(np.abs(mine - theirs).max()) / scale
        worst = max(worst, diff)
        if key.endswith("__value"):
            name = key[: -len("__value")]
            grads = [k for k in arrays if k.startswith(name + "__grad")]
            gdiff = max(float(np.abs(arrays[k] - other[k]).max()) / max(float(np.abs(other[k]).max()), 1e-6)
                        for k in grads)
            print(f"{name:32s} value {float(mine):+.6f} vs {float(theirs):+.6f}   max rel. gradient diff {gdiff:.1e}")
        if diff > args.rtol:
            failed.append(key)
    print(f"largest relative difference {worst:.2e}; over rtol {args.rtol}: {failed or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
