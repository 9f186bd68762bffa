"""Shared by the recipe and command-line tests: a flagfile's flags, the miniature SOP file
(``conftest.py``'s ``mini_sop`` fixture), and the entry points run as new processes that skip
TensorFlow's import (:func:`run_script`, :func:`start_script`).

A ``python train/<script>.py ...`` costs about 8 s of CPU before its first line of dmltf, nearly
all of it ``import tensorflow`` (which imports Keras, scikit-learn and, when installed, JAX),
and 2 s more at its exit (the interpreter's teardown of those modules). Here each script runs
in a child forked from a server process (one per test process, started on first use) that has
imported TensorFlow and nothing else: the child is a fresh process (its own argv, environment,
working directory, stdout and stderr; TensorFlow's runtime and devices are set up by the
script, as in a new process), less the import and the teardown. What the import itself prints
is test_quiet_start's, which starts real processes.
"""
import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "train", "configs")


def flagfile_flags(name):
    """{flag: value text} of the ``--name=value`` lines of ``train/configs/<name>`` (or of a path)."""
    path = name if os.path.dirname(name) else os.path.join(CONFIGS, name)
    lines = [line.strip() for line in open(path) if line.strip().startswith("--")]
    return dict(line[2:].split("=", 1) for line in lines)


def convert_mini_sop(root):
    """The miniature Stanford Online Products of ``raw_datasets.make_sop`` under ``root``,
    converted with datasets/sop_converter.py's reader; returns the HDF5 path."""
    from raw_datasets import make_sop

    from dmltf.data.raw import sop

    make_sop(str(root))
    output = os.path.join(str(root), "sop.hdf5")
    assert sop.main(["--root", os.path.join(str(root), "Stanford_Online_Products"), "--output", output,
                     "--resize", "none"]) == 0
    return output


# -- entry points in forked processes ------------------------------------------------------------
class StartedScript:
    """A script started by :func:`start_script`; :meth:`finish` waits for it."""

    def __init__(self, args, pid, stdout, stderr):
        self.args, self.pid, self._stdout, self._stderr = args, pid, stdout, stderr

    def finish(self, timeout=300):
        """``subprocess.CompletedProcess`` (text stdout and stderr) once the script has exited;
        killed and ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        reply = _ask({"wait": self.pid}, timeout)
        if reply is None:
            os.kill(self.pid, signal.SIGKILL)
            _reply(_server())  # the server's waitpid returns
        outputs = []
        for path in (self._stdout, self._stderr):
            with open(path, errors="replace") as f:
                outputs.append(f.read())
            os.remove(path)
        if reply is None:
            raise subprocess.TimeoutExpired(self.args, timeout, *outputs)
        return subprocess.CompletedProcess(self.args, reply["returncode"], *outputs)


def start_script(script, *args, env=None, cwd=REPO):
    """Starts ``python <script> <args>`` (``script`` relative to ``cwd`` or absolute) with ``env``
    (default: this process's environment) and returns at once, as ``subprocess.Popen`` does. The
    variables TensorFlow reads while it is imported (``TF_CPP_MIN_LOG_LEVEL``) are those of the
    first call's process."""
    outputs = []
    for name in ("out", "err"):
        fd, path = tempfile.mkstemp(prefix=f"dmltf-script-{name}-")
        os.close(fd)
        outputs.append(path)
    argv = [script, *map(str, args)]
    request = {"argv": argv, "env": dict(os.environ if env is None else env), "cwd": str(cwd),
               "stdout": outputs[0], "stderr": outputs[1]}
    return StartedScript([sys.executable, *argv], _ask(request)["pid"], *outputs)


def run_script(script, *args, env=None, cwd=REPO, timeout=300):
    """``subprocess.run([sys.executable, script, *args], capture_output=True, text=True)``, without
    the TensorFlow import (see the module's docstring)."""
    return start_script(script, *args, env=env, cwd=cwd).finish(timeout)


_SERVER = []  # the server of this process, started on first use


def _server():
    if not _SERVER or _SERVER[0].poll() is not None:
        log = tempfile.TemporaryFile(mode="w+")
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
        server.log = log
        _SERVER[:] = [server]
        atexit.register(_stop, server)
    return _SERVER[0]


def _ask(request, timeout=None):
    """The server's reply to ``request``; None after ``timeout`` seconds without one. A request
    interrupted otherwise leaves its reply unread: that server is ended (the next call starts one)."""
    server = _server()
    try:
        _send(server, request)
        if timeout is not None and not select.select([server.stdout], [], [], timeout)[0]:
            return None
        return _reply(server)
    except BaseException:
        server.kill()
        _SERVER.clear()
        raise


def _stop(server):
    server.stdin.close()  # the server ends at the end of its requests
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def _send(server, request):
    server.stdin.write(json.dumps(request) + "\n")
    server.stdin.flush()


def _reply(server):
    line = server.stdout.readline()
    if not line:
        server.wait()
        server.log.seek(0)
        raise RuntimeError(f"the script server died (exit status {server.returncode}): {server.log.read()[-3000:]}")
    return json.loads(line)


_EXIT_STATUS = [0]  # a child's, for _exit_unfinalised


def _exit_unfinalised():
    """Registered before TensorFlow's import, so run after every other exit handler: ends the
    process with its exit status, without the interpreter's teardown of the modules (2 s of CPU
    after TensorFlow's import, and nothing a script's output depends on)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[0])


def _serve():
    """One request a line on stdin: {"wait": pid} answers {"returncode"} once that child has
    exited; a start request forks a child that runs the script, answering {"pid"}."""
    atexit.register(_exit_unfinalised)
    import tensorflow  # noqa: F401  (what every child shares)

    # readline, not iteration: no read-ahead past a request (a child would inherit it).
    while line := sys.stdin.readline():
        request = json.loads(line)
        if "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            reply = {"returncode": os.waitstatus_to_exitcode(status)}
        else:
            pid = os.fork()
            if pid == 0:
                _run_child(**request)
            reply = {"pid": pid}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _run_child(argv, env, cwd, stdout, stderr):
    """Becomes ``python argv[0] argv[1:]``: the script's exit (SystemExit, an uncaught exception's
    traceback, the end of the script) leaves the server's loop and ends the process as Python's
    does (waiting for its threads, then its exit handlers), less the teardown (:func:`_exit_unfinalised`)."""
    import runpy

    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY), (2, stderr, os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = argv
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))  # as Python sets it for a script
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:  # Python's exit status of a SystemExit (it prints a message itself)
        _EXIT_STATUS[0] = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        raise
    except BaseException:  # a traceback
        _EXIT_STATUS[0] = 1
        raise
    sys.exit(0)


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    _serve()
