"""A quiet start: every entry point (train/, datasets/, pretrained/) drops TensorFlow's native start-up notices (written by its C++
runtime before absl's logging starts, out of TF_CPP_MIN_LOG_LEVEL's reach) and keep every other
line of stderr; --verbose keeps the notices."""
import os
import re
import subprocess
import sys

from dmltf import startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Written apart from dmltf.startup.NOTICES: what a user sees at start-up on a machine without a GPU.
NOISE = re.compile(r"absl::InitializeLog|oneDNN custom operations|Could not find cuda drivers|failed call to cuInit|"
                   r"cpu_feature_guard")


def start(*args):
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})


def test_entry_points_start_quietly_and_verbose_keeps_the_notices(tmp_path):
    logdir = tmp_path / "run"
    procs = {
        "help": start("train/main.py", "--help"),
        "help verbose": start("train/main.py", "--help", "--verbose"),
        "demo": start("train/main.py", "--flagfile=train/configs/demo.cfg", "--epochs=1", "--max_steps_per_epoch=2",
                      "--export=false", "--baselines=false", "--tb_projector_points=0", "--tb_neighbours=0",
                      f"--logdir={logdir}"),
        "converter help": start("datasets/folder_converter.py", "--help"),
        "weights converter help": start("-m", "pretrained.googlenet_from_caffe", "--help"),
    }
    out = {name: p.communicate(timeout=300) + (p.returncode,) for name, p in procs.items()}
    for name in ("help", "demo", "converter help", "weights converter help"):
        stdout, stderr, code = out[name]
        assert code == (1 if name == "help" else 0), (name, stderr[-2000:])  # absl's --help exits with 1, argparse's 0
        assert not NOISE.search(stderr), (name, stderr[:2000])
    assert "--logdir" in out["help"][0]
    assert "--verbose" in out["converter help"][0] and "--verbose" in out["weights converter help"][0]
    assert "map@r" in out["demo"][0]
    assert NOISE.search(out["help verbose"][1]), out["help verbose"][1][:2000]


def test_other_lines_written_meanwhile_are_kept(capfd):
    with startup.start_up_notices_dropped():
        os.write(2, b"I0000 00:00:1 7 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"a real warning\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    assert capfd.readouterr().err == "a real warning\n"
    with startup.start_up_notices_dropped(keep=True):
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
    assert "oneDNN" in capfd.readouterr().err


def test_verbose_is_read_from_the_command_line():
    assert startup.verbose(["main.py", "--verbose"]) and startup.verbose(["x", "--verbose=true"])
    assert not startup.verbose(["main.py", "--flagfile=a.cfg"]) and not startup.verbose(["x", "--verbose=false"])
