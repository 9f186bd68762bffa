"""Images per second of one training step of each registry backbone, without and with XLA.

The step: the dmltf embedding model (backbone -> average pooling -> Dense(512) -> L2), a
triplet loss with semi-hard mining on 8 classes x 4 images, SGD over all trainable variables,
in one ``tf.function`` (``jit_compile=True`` for the XLA column: the forward, backward and
update in one XLA cluster); images 224 x 224 (``--size``), batch 32. The first (tracing /
compiling) step is a warm-up and is excluded; its seconds are printed for XLA, whose compile is
the cost a run pays once. The figure is batch * steps / wall time of ``--steps`` timed steps.
``--freeze_bn`` freezes BatchNorm as the references do (DRML, Proxy-Anchor, LM-Metric).
``--precision`` builds the model under a Keras mixed-precision policy (float16 with loss
scaling). A backbone that XLA cannot compile shows the XLA error's first line instead of a figure.

    python bench/backbone_speed.py [--steps 3] [--size 224] [--batch 32] [--backbones a,b] [--freeze_bn]
                                   [--precision float32] [--xla both|off|on]

``bench/gpu_check.py`` times its cells with :func:`training_step` and :func:`time_step`.
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
from dmltf.training.trainer import first_line  # noqa: E402

DEFAULT = ("googlenet", "googlenet_dvml", "bn_inception", "resnet50_torch", "resnet50", "inception_v3", "mobilenet_v2")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def training_step(name, size, batch, freeze_bn=False, precision="float32", jit_compile=False):
    """A callable running one training step of backbone ``name`` on a fixed random batch and
    returning its loss as a float. The model is built under the ``precision`` policy (the
    global policy is restored afterwards); float16 scales the loss (LossScaleOptimizer)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_embedding_model(name, (size, size, 3), embedding_dim=512, freeze_bn=freeze_bn)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    loss = losses.get("triplet", miner="semi_hard")
    optimizer = keras.optimizers.SGD(1e-4)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    images = tf.random.normal((batch, size, size, 3))
    labels = tf.constant(np.repeat(np.arange(batch // 4 + 1), 4)[:batch])

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, tf.cast(model(images, training=True), tf.float32))
            scaled = optimizer.scale_loss(value) if precision == "mixed_float16" else value
        optimizer.apply_gradients(zip(tape.gradient(scaled, model.trainable_variables), model.trainable_variables))
        return value

    return lambda: float(step().numpy())


def time_step(step, steps):
    """(warm-up seconds, seconds per step of ``steps`` timed steps) of ``step``."""
    start = time.perf_counter()
    step()  # trace (+ XLA compile) and warm-up
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return warmup, (time.perf_counter() - start) / steps


def timed_cell(name, args, jit_compile):
    """The printed columns of one (backbone, XLA on/off) cell: s/step and images/s, or the error."""
    try:
        warmup, seconds = time_step(training_step(name, args.size, args.batch, args.freeze_bn, args.precision,
                                                  jit_compile), args.steps)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        if not jit_compile:
            raise
        return None, f"XLA failed: {first_line(e)}"
    finally:
        keras.backend.clear_session()
    return (warmup, seconds), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbones", default=",".join(DEFAULT))
    parser.add_argument("--freeze_bn", action="store_true")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--xla", default="both", choices=("both", "off", "on"),
                        help="Columns: without XLA, with XLA (jit_compile=True), or both side by side.")
    args = parser.parse_args()
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.xla]
    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU" if gpus else f"CPU ({os.cpu_count()} cores)"
    print(f"training step, batch {args.batch} x {args.size}x{args.size}, {device}, {args.precision}, "
          f"{args.steps} timed steps after 1 warm-up, freeze_bn={args.freeze_bn}")
    columns = {False: f"{'s/step':>8s} {'images/s':>9s}", True: f"{'XLA s/step':>10s} {'XLA images/s':>12s} "
                                                                 f"{'XLA warm-up s':>13s}"}
    print(f"{'backbone':16s} {'feature':>7s} " + " ".join(columns[m] for m in modes))
    for name in args.backbones.split(","):
        cells = []
        for jit_compile in modes:
            timing, error = timed_cell(name, args, jit_compile)
            if error:
                cells.append(error)
            elif jit_compile:
                warmup, seconds = timing
                cells.append(f"{seconds:10.2f} {args.batch / seconds:12.1f} {warmup:13.1f}")
            else:
                cells.append(f"{timing[1]:8.2f} {args.batch / timing[1]:9.1f}")
        dim = backbones.get_spec(name).feature_dim
        print(f"{name:16s} {dim:7d} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
