"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train a few steps in sync,
and a flagfile with an unknown flag fails before any training starts."""
import json
import os
import socket

import numpy as np
import tensorflow as tf
from recipes import run_script, start_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "train", "main.py")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_train_in_sync(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    args = [MAIN, "--strategy=multi_worker", "--dataset=digits", "--embedding_dim=16",
            "--classes_per_batch=10", "--samples_per_class=4", "--epochs=1", "--max_steps_per_epoch=3",
            "--eval_every=0", "--export=false", "--progress=none", "--tb_neighbours=0", "--tb_projector_points=0",
            "--eval_metrics=recall@1", "--best_metric=recall@1", f"--logdir={tmp_path}"]
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}))
        procs.append(start_script(*args, env=env))
    done = [p.finish() for p in procs]
    outputs = [d.stdout + d.stderr for d in done]
    for d, out in zip(done, outputs):
        assert d.returncode == 0, out[-3000:]
    assert "recall@1" in outputs[0] and "MultiWorkerMirroredStrategy: 2 replicas" in outputs[0]  # the chief
    chief = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    other = tf.train.latest_checkpoint(str(tmp_path / "workers" / "worker_1" / "checkpoints"))
    a, b = tf.train.load_checkpoint(chief), tf.train.load_checkpoint(other)
    # Model weights, BN statistics, proxies and optimizer slots (the checkpoint files each
    # variable under its first path, e.g. the backbone weights under optimizer_backbone/).
    names = [n for n in a.get_variable_to_shape_map() if n not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")]
    assert sum("_trainable_variables" in n for n in names) >= 11 and any("proxies" in n for n in names)
    for n in names:
        if "moving_" in n:  # BatchNorm statistics are per replica (not synchronised BN)
            continue
        np.testing.assert_array_equal(a.get_tensor(n), b.get_tensor(n), err_msg=n)
    assert int(a.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 3


def test_flagfile_with_unknown_flag_fails_before_training(tmp_path):
    flagfile = tmp_path / "bad.cfg"
    flagfile.write_text("--dataset=digits\n--epochs=1\n--loss_triplet_margn=0.2\n")
    out = run_script(MAIN, f"--flagfile={flagfile}", f"--logdir={tmp_path / 'run'}", timeout=120)
    assert out.returncode != 0
    assert "loss_triplet_margn" in out.stderr
    assert not (tmp_path / "run").exists()


def test_cpu_replicas_flag_trains_mirrored_from_the_command_line(tmp_path):
    out = run_script(MAIN, "--strategy=mirrored", "--cpu_replicas=2", "--dataset=digits", "--embedding_dim=16",
                     "--classes_per_batch=10", "--samples_per_class=4", "--epochs=1", "--max_steps_per_epoch=2",
                     "--export=false", "--progress=none", "--tb_neighbours=0", "--tb_projector_points=0",
                     "--eval_metrics=recall@1", "--best_metric=recall@1", f"--logdir={tmp_path}",
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas" in out.stdout
    assert "trained" in out.stdout and "recall@1" in out.stdout
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))


def test_configuration_mistakes_give_one_error_line(tmp_path):
    out = run_script(MAIN, "--loss=proxy_anchr", f"--logdir={tmp_path / 'run'}",
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=120)
    assert out.returncode == 1
    assert "error: Unknown loss 'proxy_anchr'; valid names:" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
