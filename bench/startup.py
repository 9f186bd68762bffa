"""Start-up time of ``python train/main.py --flagfile=train/configs/demo.cfg`` up to its first training step.

A fresh interpreter runs train/main.py's own code path: the module itself (absl, the quiet
TensorFlow start, config), its flag parsing and device set-up, ``build_trainer`` (seeds, policy,
strategy, ``builders.load_splits``, ``builders.build_method`` and the Trainer, each timed by a
wrapper installed in that process only) and the first training step (the input pipeline's first
batch, tracing, one step), then a second step for comparison. The parent reports each phase from
the interpreter's launch, and the imports that take longest (``python -X importtime``). Nothing
is written outside a temporary logdir.

    python bench/startup.py [--flag=value ...]   # extra flags go to train/main.py (after the demo's)
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = ["--flagfile=train/configs/demo.cfg", "--epochs=2", "--max_steps_per_epoch=1", "--eval_every=0",
        "--baselines=false", "--export=false", "--tb_projector_points=0", "--tb_neighbours=0", "--progress=none"]
PHASES = [  # (key, what) in the order they happen
    ("interpreter", "python itself, to the first line of the driver"),
    ("entry_module", "import train/main.py: absl, the quiet TensorFlow start, config"),
    ("flags", "flag definitions and parsing, config.make, configure_devices"),
    ("training_imports", "import dmltf.training.experiment (Keras, dmltf's modules)"),
    ("policy_strategy", "build_trainer up to the data: seeds, determinism, policy, strategy"),
    ("dataset_load", "builders.load_splits"),
    ("model_build", "builders.build_method (backbone, head, loss)"),
    ("trainer_rest", "the rest of build_trainer (Trainer: optimizers, checkpoint, logdir)"),
    ("first_step", "first training step: pipeline start, tracing, the step"),
]


def child(argv, launched):
    """Runs in the fresh interpreter: train/main.py's path with timestamps; prints one JSON line."""
    marks = {"interpreter": time.time() - launched}
    start = time.perf_counter()

    def mark(name):
        nonlocal start
        now = time.perf_counter()
        marks[name] = marks.get(name, 0.0) + now - start
        start = now

    sys.path.insert(0, ROOT)
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_main", os.path.join(ROOT, "train", "main.py"))
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)  # what `python train/main.py` runs before main()
    mark("entry_module")
    from absl import flags

    entry.define_flags()
    flags.FLAGS(["train/main.py", *argv])
    cfg = entry.config_from_flags()
    entry.configure_devices(cfg.cpu_replicas, cfg.threads)
    mark("flags")
    from dmltf.training import builders, experiment

    mark("training_imports")

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            mark("policy_strategy" if name == "dataset_load" else "trainer_rest")  # what ran before
            out = fn(*args, **kwargs)
            mark(name)
            return out
        return wrapper

    builders.load_splits = timed("dataset_load", builders.load_splits)
    builders.build_method = timed("model_build", builders.build_method)
    trainer = experiment.build_trainer(cfg)
    mark("trainer_rest")
    trainer.train_epoch(0)
    mark("first_step")
    trainer.epoch.assign_add(1)  # as fit() does between epochs
    trainer.train_epoch(1)
    mark("second_step")
    print("STARTUP " + json.dumps(marks), flush=True)


def top_imports(lines, count=8):
    """The ``count`` imports with the largest cumulative time from ``-X importtime`` lines,
    top-level packages only (no dots)."""
    rows = []
    for line in lines:
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if cumulative.isdigit() and "." not in name:
            rows.append((int(cumulative) / 1e6, name))
    return sorted(rows, reverse=True)[:count]


def main():
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[3:], float(sys.argv[2]))
    with tempfile.TemporaryDirectory(prefix="dmltf-startup-") as logdir:
        argv = [*DEMO, f"--logdir={os.path.join(logdir, 'run')}", *sys.argv[1:]]
        launched = time.time()
        done = subprocess.run([sys.executable, "-X", "importtime", os.path.abspath(__file__), "--child",
                               repr(launched), *argv], cwd=ROOT, capture_output=True, text=True)
        total = time.time() - launched
    lines = [line for line in done.stdout.splitlines() if line.startswith("STARTUP ")]
    if done.returncode or not lines:
        sys.exit(f"error: the driver failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    marks = json.loads(lines[-1][len("STARTUP "):])
    print(f"python train/main.py {' '.join(DEMO[:1])} ... to its first training step "
          f"({os.cpu_count()} CPUs; -X importtime adds a little to the imports)")
    elapsed = 0.0
    for key, what in PHASES:
        elapsed += marks.get(key, 0.0)
        print(f"  {marks.get(key, 0.0):7.2f} s  (at {elapsed:6.2f} s)  {key:<17} {what}")
    tracing = marks["first_step"] - marks["second_step"]
    print(f"  first training step at {elapsed:.2f} s; a second step takes {marks['second_step']:.2f} s, so about "
          f"{tracing:.2f} s of the first is tracing and pipeline start")
    print(f"  whole driver process {total:.2f} s")
    print("largest imports (cumulative, top-level packages):")
    for seconds, name in top_imports(done.stderr.splitlines()):
        print(f"  {seconds:7.2f} s  {name}")


if __name__ == "__main__":
    main()
