"""One command for a GPU check (issue 21): what a dmltf run gets from an accelerator, in one table.

On a machine with a GPU it prints, in under 8 minutes, from synthetic data (no dataset):

* the machine: GPU name, CPU cores, TensorFlow / Keras / faiss versions;
* training images/s of ResNet-50 (torch layout), BN-Inception and GoogLeNet at their recipe
  batches (:data:`RECIPE_BATCHES`) in float32, mixed precision (float16 on a GPU, bfloat16 on
  a CPU, which has no fast float16) and mixed + XLA: ``bench/backbone_speed.py``'s step (the
  embedding model, semi-hard triplets, SGD), timed over ``--steps`` steps after a warm-up
  (the trace and, under XLA, the compile; its seconds are printed too);
* the input pipeline's images/s on the machine's cores: ``bench/input_pipeline.py`` run as a
  command (small settings), its table printed as it is;
* exact kNN evaluation of 60,502 x 512 random embeddings (the SOP test size; 11,316 classes)
  with dmltf's own path (``dmltf.evaluation.evaluate``: recall@1/10/100/1000 and map@r, k =
  1,000 neighbours) on faiss-gpu (when ``faiss.get_num_gpus() > 0``) and on faiss-cpu;
* the peak GPU memory TensorFlow allocated (``tf.config.experimental.get_memory_info``);
* the total wall time.

``--smoke`` runs the same rows at tiny sizes on any machine, CPU included, to check the command
itself in under a minute (``tests/test_gpu_check.py``): the registered ``small_cnn`` in place of
the three backbones (building and tracing ResNet-50 alone takes longer on 2 cores), 32 px,
batch 8, 1 step, a 2,000 x 64 search.

    pip install -e .[gpu]        # faiss-gpu-cu12 and TensorFlow's CUDA libraries
    python bench/gpu_check.py    # or: bench/gpu_check.sh
    python bench/gpu_check.py --smoke
"""
import argparse
import contextlib
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import backbone_speed  # noqa: E402  (bench/, beside this file)
from dmltf import evaluation  # noqa: E402
from dmltf.training.trainer import first_line  # noqa: E402

# Global batches of the recipes in train/configs (P x K): ResNet-50 (torch) LM-Metric on
# CUB/Cars (45 x 4), BN-Inception Proxy-Anchor (180 x 1), GoogLeNet DVML (30 x 4).
RECIPE_BATCHES = {"resnet50_torch": 180, "bn_inception": 180, "googlenet": 120}
SOP_TEST = (60502, 512, 11316)  # images, embedding width, classes of the SOP test split
SOP_METRICS = ("recall@1", "recall@10", "recall@100", "recall@1000", "map@r")
SMOKE = dict(batches={"small_cnn": 8}, size=32, steps=1, search=(2000, 64, 200),
             metrics=("recall@1", "recall@10", "map@r"))


def machine():
    """One line: GPU name(s), CPU cores, library versions."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    try:
        import faiss

        faiss_version = f"faiss {faiss.__version__} ({faiss.get_num_gpus()} GPUs)"
    except ImportError:
        faiss_version = "faiss not installed"
    return (f"machine: {', '.join(names) or 'no GPU'}; {os.cpu_count()} CPU cores; TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}, {faiss_version}")


def precisions(on_gpu):
    """(row label, Keras policy, XLA) of the three training columns."""
    mixed = "mixed_float16" if on_gpu else "mixed_bfloat16"
    return (("float32", "float32", False), (mixed.replace("mixed_", "mixed "), mixed, False),
            (mixed.replace("mixed_", "mixed ") + " + XLA", mixed, True))


def training_rows(batches, size, steps, on_gpu):
    """Prints one row per (backbone, precision): images/s, s/step, warm-up seconds."""
    print(f"\ntraining step at {size}x{size} (bench/backbone_speed.py's step), {steps} timed steps after 1 warm-up")
    print(f"{'backbone':16s} {'batch':>5s} {'precision':>22s} {'images/s':>9s} {'s/step':>8s} {'warm-up s':>9s}")
    for name, batch in batches.items():
        for label, policy, xla in precisions(on_gpu):
            try:
                warmup, seconds = backbone_speed.time_step(
                    backbone_speed.training_step(name, size, batch, precision=policy, jit_compile=xla), steps)
                figures = f"{batch / seconds:9.1f} {seconds:8.3f} {warmup:9.1f}"
            except (tf.errors.OpError, ValueError) as e:  # one cell fails (e.g. out of memory), the table goes on
                figures = f"failed: {first_line(e)}"
            finally:
                keras.backend.clear_session()
            print(f"{name:16s} {batch:5d} {label:>22s} {figures}", flush=True)


def input_pipeline_rows(smoke):
    """``bench/input_pipeline.py`` as a command, small settings; its output printed as it is."""
    settings = (["--images", "24", "--classes", "4", "--epochs", "1", "--P", "2", "--K", "2"] if smoke
                else ["--images", "600", "--classes", "30", "--epochs", "2"])
    # The step's consumption is this table's training rows; the pipeline's figure is what matters here.
    command = [sys.executable, os.path.join(HERE, "input_pipeline.py"), *settings, "--step_images_per_second", "1"]
    print(f"\ninput pipeline on {os.cpu_count()} CPU cores: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if not line.startswith("step consumption")]
    print("\n".join(lines), flush=True)
    if done.returncode:
        print(f"input pipeline failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}", flush=True)


@contextlib.contextmanager
def faiss_without_gpus():
    """faiss-cpu's search on a machine whose faiss sees GPUs: dmltf's search moves its index to
    every GPU that ``faiss.get_num_gpus()`` reports, so it reports none for a while."""
    import faiss

    real = faiss.get_num_gpus
    faiss.get_num_gpus = lambda: 0
    try:
        yield
    finally:
        faiss.get_num_gpus = real


def evaluation_rows(num, dim, classes, metrics):
    """Seconds of dmltf's retrieval evaluation of ``num`` x ``dim`` random embeddings, on faiss-gpu
    (if faiss sees a GPU) and on faiss-cpu."""
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((num, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.arange(num) % classes
    print(f"\nevaluation: exact kNN of {num:,} x {dim} (random, {classes:,} classes), {', '.join(metrics)}")
    devices = (("faiss-gpu", contextlib.nullcontext),) if faiss.get_num_gpus() > 0 else ()
    for label, context in (*devices, ("faiss-cpu", faiss_without_gpus)):
        with context():
            start = time.perf_counter()
            evaluation.evaluate(x, labels, metrics=metrics, backend="faiss")
            seconds = time.perf_counter() - start
        print(f"{label:10s} {seconds:8.1f} s", flush=True)
    if not devices:
        print("faiss-gpu  not run: faiss sees no GPU (pip install -e .[gpu] on a CUDA machine)")


def peak_gpu_memory():
    if not tf.config.list_physical_devices("GPU"):
        return "peak GPU memory: no GPU"
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return f"peak GPU memory: {peak / 2**30:.2f} GiB (GPU:0, TensorFlow's allocator)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any machine: checks the command")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per cell")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    started = time.perf_counter()
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    print(machine(), flush=True)
    run = SMOKE if args.smoke else dict(batches=RECIPE_BATCHES, size=args.size, steps=args.steps, search=SOP_TEST,
                                        metrics=SOP_METRICS)
    training_rows(run["batches"], run["size"], run["steps"], on_gpu)
    input_pipeline_rows(args.smoke)
    evaluation_rows(*run["search"], run["metrics"])
    print("\n" + peak_gpu_memory())
    print(f"total wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
