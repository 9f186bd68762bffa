"""Images per second of one training step of each registry backbone on CPU.

The step: the dmltf embedding model (backbone -> average pooling -> Dense(512) -> L2), a
triplet loss with semi-hard mining on 8 classes x 4 images, SGD over all trainable variables,
in one ``tf.function``; images 224 x 224 (``--size``), batch 32. The first (tracing) step is a
warm-up and is excluded. The figure is batch * steps / wall time of ``--steps`` timed steps.
``--freeze_bn`` freezes BatchNorm as the references do (DRML, Proxy-Anchor, LM-Metric).

    python bench/backbone_speed.py [--steps 3] [--size 224] [--batch 32] [--backbones a,b] [--freeze_bn]
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dmltf import losses  # noqa: E402
from dmltf.models import backbones, build_embedding_model  # noqa: E402

DEFAULT = ("googlenet", "googlenet_dvml", "bn_inception", "resnet50_torch", "resnet50", "inception_v3", "mobilenet_v2")


def training_step(name, size, batch, freeze_bn):
    model = build_embedding_model(name, (size, size, 3), embedding_dim=512, freeze_bn=freeze_bn)
    loss = losses.get("triplet", miner="semi_hard")
    optimizer = keras.optimizers.SGD(1e-4)
    images = tf.random.normal((batch, size, size, 3))
    labels = tf.constant(np.repeat(np.arange(batch // 4 + 1), 4)[:batch])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, model(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))
        return value

    return lambda: step().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbones", default=",".join(DEFAULT))
    parser.add_argument("--freeze_bn", action="store_true")
    args = parser.parse_args()
    print(f"training step, batch {args.batch} x {args.size}x{args.size}, CPU ({os.cpu_count()} cores), "
          f"{args.steps} timed steps after 1 warm-up, freeze_bn={args.freeze_bn}")
    print(f"{'backbone':16s} {'feature':>7s} {'s/step':>8s} {'images/s':>9s}")
    for name in args.backbones.split(","):
        step = training_step(name, args.size, args.batch, args.freeze_bn)
        step()  # trace + warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
        dim = backbones.get_spec(name).feature_dim
        print(f"{name:16s} {dim:7d} {seconds:8.2f} {args.batch / seconds:9.1f}", flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
