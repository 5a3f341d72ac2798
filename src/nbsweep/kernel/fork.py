"""Kernels forked from a template process: a fresh interpreter nbsweep starts once per
agent and kernel recipe, which imports ipykernel, IPython, jupyter_client and the
notebook's preload modules, freezes its heap and then only forks. Each trial's kernel is a
child that never ran user code, with the trial's environment and working directory, up in
tens of milliseconds instead of a fresh interpreter's ~0.35 s of CPU.

The template never creates a thread, an event loop, a ZMQ context or socket, and never
initialises CUDA (those do not survive a fork); it checks before each fork that it has one
thread. jupyter_client talks to a forked kernel through ``ForkProvisioner``; the rest of
``Kernel`` does not know the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import psutil
from jupyter_client.provisioning import LocalProvisioner

from nbsweep.errors import KernelStartError
from nbsweep.processes import die_with_parent

# Runs in the template. Its stdin brings one JSON request a line, its stdout answers.
TEMPLATE_NAME = "nbsweep-forker"
"""The template's process name (``ps -o comm``); its kernels are ``python`` again."""
_TEMPLATE = r"""
# nbsweep: ipykernel_launcher template; forks each trial's kernel (ps and pkill see the name)
import atexit, ctypes, gc, json, os, signal, sys
def _end_after_exit_handlers():  # registered first: runs after every other exit handler
    if getattr(sys, "_nbsweep_skip_teardown", False):
        os._exit(0)
atexit.register(_end_after_exit_handlers)  # in the kernels: the template never sets it
ctypes.CDLL(None).prctl(15, b"nbsweep-forker", 0, 0, 0)  # PR_SET_NAME
if sys.path[0] == "":
    del sys.path[0]
_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # what imports print goes to the template's log, not the answers
sys.modules["debugpy"] = None  # ipykernel imports it only for a frontend's debugger
from ipykernel.kernelapp import IPKernelApp
import IPython, jupyter_client, zmq
skipped = os.environ.pop("_NBSWEEP_PRELOAD_SKIPPED", "")
threadpoolctl = None
if not skipped:
    first = json.loads(sys.stdin.readline())
    if first.get("preload"):
        # OpenBLAS starts its thread pool as it loads, after which no fork is safe. Loaded
        # with one thread it starts none; each kernel then sets the count a fresh process
        # would have chosen.
        users = os.environ.get("OPENBLAS_NUM_THREADS")
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        exec(first["preload"], {})
        if users is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = users
        try:
            import threadpoolctl
        except ImportError:
            threadpoolctl = None
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            # An import started a thread (OpenBLAS does): no fork is safe from here. The
            # template starts over without the preload, which each kernel then runs itself.
            os.environ["_NBSWEEP_PRELOAD_SKIPPED"] = f"its imports started {threads - 1} thread(s)"
            _out.flush()
            os.dup2(_out.fileno(), 1)
            argv = open("/proc/self/cmdline", "rb").read().split(b"\0")[:-1]
            os.execv(sys.executable, argv)
del sys.modules["debugpy"]
gc.collect()
gc.freeze()  # the children share these pages; no collection copies them

def _reap(signum, frame):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

signal.signal(signal.SIGCHLD, _reap)
_out.write(json.dumps({"ready": True, "skipped": skipped}) + "\n")
_out.flush()

def _blas_threads(env):
    # What OpenBLAS reads as it loads, in its order; else one thread a core it may use.
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))

def _as_a_fresh_process(env):
    # A fork copies the generators a fresh process seeds from entropy (Python's random
    # reseeds itself at fork; these do not), and the one-thread BLAS of the template.
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()  # CUDA's generators too, lazily: it does not initialise CUDA
    if not skipped and threadpoolctl is not None and numpy is not None:
        threadpoolctl.threadpool_limits(_blas_threads(env), user_api="blas")

def _child(request):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setpgid(0, 0)
    ctypes.CDLL(None).prctl(15, b"python", 0, 0, 0)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # dies with the template
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    # Closed through its file object: at the kernel's exit that object would otherwise
    # close its descriptor's number again, by then perhaps a file the notebook writes.
    _out.close()
    os.closerange(3, 1 << 16)
    _as_a_fresh_process(request["env"])
    IPKernelApp.clear_instance()  # a Session made in the template drops the child's messages
    sys.modules["debugpy"] = None
    app = IPKernelApp.instance()
    app.initialize(["-f", request["connection_file"], "--HistoryManager.hist_file=:memory:"])
    del sys.modules["debugpy"]
    app.start()

import time
for line in sys.stdin:
    request = json.loads(line)
    for _ in range(20):  # a thread an import started may still be ending
        threads = len(os.listdir("/proc/self/task"))
        if threads == 1:
            break
        time.sleep(0.05)
    if threads != 1:
        _out.write(json.dumps({"error": f"the template has {threads} threads"}) + "\n")
        _out.flush()
        continue
    pid = os.fork()
    if pid == 0:
        _child(request)
        # The kernel has shut down. It ends as an exec'd kernel's script does: by the
        # interpreter's own exit (threads joined, exit handlers, teardown unless skipped,
        # stdio flushed); an error in _child leaves this loop the same way, with code 1.
        sys.exit(0)
    _out.write(json.dumps({"pid": pid}) + "\n")
    _out.flush()
"""


def can_fork(kernel_name: str, cuda: bool) -> str | None:
    """Why a fork cannot serve this recipe, or None where it can."""
    if not sys.platform.startswith("linux"):
        return "forked kernels need Linux"
    if kernel_name.lower() not in ("python3", "python", ""):
        return f"kernel {kernel_name!r} is not this Python's ipykernel"
    if cuda:
        return "CUDA cannot cross a fork (--preload-cuda)"
    return None


class Template:
    """The template process; ``fork`` asks it for a kernel. Stopped with ``stop``, and it
    dies with this process (its kernels die with it)."""

    def __init__(self, cwd: Path, env: dict[str, str], preload_code: str | None) -> None:
        self.log = open(os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _TEMPLATE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=cwd,
            env=env,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[bytes] = self.process.stdin
        self._stdout: IO[bytes] = self.process.stdout
        self._lock = threading.Lock()
        self._send({"preload": preload_code})
        self.ready = False
        self.preload_skipped = ""
        """Why the template could not keep the preload (then each kernel runs it)."""

    def _send(self, request: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(request).encode() + b"\n")
        self._stdin.flush()

    def _answer(self) -> dict[str, Any]:
        line = self._stdout.readline()
        if not line:
            raise KernelStartError("the kernel template exited")
        return dict(json.loads(line))

    def wait_ready(self) -> None:
        """Block until the template has imported everything (call off the event loop)."""
        with self._lock:
            if not self.ready:
                self.preload_skipped = str(self._answer().get("skipped") or "")
                self.ready = True

    def fork(self, connection_file: str, cwd: str, env: dict[str, str], log: str) -> int:
        """A new kernel's PID (blocking: call off the event loop)."""
        self.wait_ready()
        with self._lock:
            try:
                self._send({"connection_file": connection_file, "cwd": cwd, "env": env, "log": log})
                answer = self._answer()
            except (OSError, ValueError) as error:
                raise KernelStartError(f"the kernel template failed: {error}") from None
        if "error" in answer:
            raise KernelStartError(f"cannot fork a kernel: {answer['error']}")
        return int(answer["pid"])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        self.process.wait()
        with contextlib.suppress(OSError, ValueError):
            self._stdout.close()
        self.log.close()


class _ForkedProcess:
    """What jupyter_client expects of a kernel's ``Popen``, for a process that is the
    template's child, not ours: the template reaps it."""

    stdin = stdout = stderr = None  # what LocalProvisioner closes after a wait

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._process = psutil.Process(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                gone = self._process.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                gone = True
            if gone:
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self._process.wait(timeout)
        return self.poll()

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Launches the kernel by asking the template to fork, not by running its command."""

    template: Template | None = None
    log_path: str = os.devnull

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        assert self.template is not None
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or Path.cwd())
        connection_file = self.parent.connection_file
        pid = await asyncio.to_thread(
            self.template.fork, connection_file, cwd, env, self.log_path
        )
        self.process = _ForkedProcess(pid)
        self.pid = pid
        self.pgid = pid
        self.cwd = cwd
        return self.connection_info
