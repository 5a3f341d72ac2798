# nbsweep: ipykernel_launcher, headless (the name stays in the command line for ps and pkill)
"""What a kernel's process runs: this file's own text, as ``python -c`` (``command``).

Two modes. ``command(*ipykernel_arguments)``: a kernel, as ``python -m ipykernel_launcher``
starts one, less two costs a headless kernel has no use for: ipykernel's debugger support
imports debugpy (a good part of its start; no frontend can attach here, and a notebook's
own ``import debugpy`` still works), and the IPython history goes to memory, not to
~/.ipython's SQLite file that every parallel kernel would share. ``command(TEMPLATE)``: the
template ``kernel/fork.py`` forks kernels from; its stdin brings one JSON request a line,
its stdout answers, and each child starts its kernel the same way an exec'd one does.

Run as text, not as ``-m nbsweep...``: the process imports the standard library and
ipykernel only, never nbsweep, so the modules a kernel holds are its notebook's. It holds
no work at import time; nbsweep imports it for ``command``.
"""

import sys

# Run as `python -c`, the kernel's folder is first on sys.path: a notebook's own types.py or
# typing.py beside it must not stand in for the standard library's modules imported below.
if sys.path and sys.path[0] == "":
    del sys.path[0]

import atexit  # after the path is made safe, as every import below
import os
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import IO, TypedDict

TEMPLATE = "--nbsweep-template"
"""The argument that makes the process the fork template instead of a kernel."""
TEMPLATE_NAME = "nbsweep-forker"
"""The template's process name (``ps -o comm``); its kernels are ``python`` again."""
_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1
# Set by a template that started over without its preload: why (each kernel then runs it).
_SKIPPED_ENV = "_NBSWEEP_PRELOAD_SKIPPED"
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


class ForkRequest(TypedDict):
    """What ``Template.fork`` sends for each kernel (one JSON line)."""

    connection_file: str
    cwd: str
    env: dict[str, str]
    log: str
    """The file the kernel's stdout and stderr go to."""


class PreloadRequest(TypedDict):
    """The template's first line: what it imports before it forks (None: nothing)."""

    preload: str | None


def command(*arguments: str) -> list[str]:
    """The command line that runs this file with ``arguments``."""
    return [sys.executable, "-c", _source(), *arguments]


@cache
def _source() -> str:
    return Path(__file__).read_text(encoding="utf-8")


def main() -> None:
    # Registered first: runs after every other exit handler.
    atexit.register(_end_after_exit_handlers)
    if sys.argv[1:] == [TEMPLATE]:
        del sys.argv[1:]  # its kernels see the argv a template had before
        _Template().serve()
    else:
        start_kernel(sys.argv[1:])


def _end_after_exit_handlers() -> None:
    """Set by nbsweep before a polite shutdown that may skip the interpreter's teardown."""
    if getattr(sys, "_nbsweep_skip_teardown", False):
        os._exit(0)


def start_kernel(arguments: list[str]) -> None:
    """Run ipykernel with ``arguments`` (``-f CONNECTION_FILE ...``) until it shuts down."""
    sys.modules["debugpy"] = None  # type: ignore[assignment]  # ipykernel's import fails
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.clear_instance()  # a Session made in the template drops the child's messages
    app = IPKernelApp.instance()
    app.initialize(arguments)
    del sys.modules["debugpy"]
    app.start()


class _Template:
    """The fork template: imports what kernels share, freezes its heap, then only forks.
    It never creates a thread, an event loop, a ZMQ context or socket (none survive a fork)."""

    def __init__(self) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None)
        self.libc.prctl(_PR_SET_NAME, TEMPLATE_NAME.encode(), 0, 0, 0)
        self.answers: IO[str] = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)  # what imports print goes to the template's log, not the answers
        self.skipped = os.environ.pop(_SKIPPED_ENV, "")
        self.threadpoolctl: ModuleType | None = None

    def serve(self) -> None:
        import gc
        import json
        import signal

        sys.modules["debugpy"] = None  # type: ignore[assignment]
        import IPython  # noqa: F401  (each is imported once here, for every kernel)
        import jupyter_client  # noqa: F401
        import zmq  # noqa: F401
        from ipykernel.kernelapp import IPKernelApp  # noqa: F401

        if not self.skipped:
            self._preload(json.loads(sys.stdin.readline()))
        del sys.modules["debugpy"]
        gc.collect()
        gc.freeze()  # the children share these pages; no collection copies them
        signal.signal(signal.SIGCHLD, _reap)
        self._answer({"ready": True, "skipped": self.skipped})
        for line in sys.stdin:
            self._fork(json.loads(line))

    def _preload(self, first: PreloadRequest) -> None:
        code = first.get("preload")
        if not code:
            return
        # OpenBLAS starts its thread pool as it loads, after which no fork is safe. Loaded
        # with one thread it starts none; each kernel then sets the count a fresh process
        # would have chosen.
        users = os.environ.get("OPENBLAS_NUM_THREADS")
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        exec(code, {})
        if users is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = users
        try:
            import threadpoolctl  # type: ignore[import-untyped]
        except ImportError:
            threadpoolctl = None
        self.threadpoolctl = threadpoolctl
        threads = _threads()
        if threads != 1:
            # An import started a thread (OpenBLAS does): no fork is safe from here. The
            # template starts over without the preload, which each kernel then runs itself.
            os.environ[_SKIPPED_ENV] = f"its imports started {threads - 1} thread(s)"
            self.answers.flush()
            os.dup2(self.answers.fileno(), 1)
            with open("/proc/self/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")[:-1]
            os.execv(sys.executable, argv)

    def _fork(self, request: ForkRequest) -> None:
        import time

        for _ in range(20):  # a thread an import started may still be ending
            threads = _threads()
            if threads == 1:
                break
            time.sleep(0.05)
        if threads != 1:
            self._answer({"error": "the template has %d threads" % threads})  # noqa: UP031
            return
        pid = os.fork()
        if pid == 0:
            self._child(request)
            # The kernel has shut down. It ends as an exec'd kernel's script does: by the
            # interpreter's own exit (threads joined, exit handlers, teardown unless
            # skipped, stdio flushed); an error in _child leaves the same way, with code 1.
            sys.exit(0)
        self._answer({"pid": pid})

    def _answer(self, answer: dict[str, object]) -> None:
        import json

        self.answers.write(json.dumps(answer) + "\n")
        self.answers.flush()

    def _child(self, request: ForkRequest) -> None:
        import signal

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)
        self.libc.prctl(_PR_SET_NAME, b"python", 0, 0, 0)
        self.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the template
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        # Closed through its file object: at the kernel's exit that object would otherwise
        # close its descriptor's number again, by then perhaps a file the notebook writes.
        self.answers.close()
        os.closerange(3, 1 << 16)
        self._as_a_fresh_process(request["env"])
        start_kernel(["-f", request["connection_file"], "--HistoryManager.hist_file=:memory:"])

    def _as_a_fresh_process(self, env: dict[str, str]) -> None:
        # A fork copies the generators a fresh process seeds from entropy (Python's random
        # reseeds itself at fork; these do not), and the one-thread BLAS of the template.
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.seed()  # CUDA's generators too, lazily: it does not initialise CUDA
        if not self.skipped and self.threadpoolctl is not None and numpy is not None:
            self.threadpoolctl.threadpool_limits(_blas_threads(env), user_api="blas")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _reap(signum: int, frame: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _blas_threads(env: dict[str, str]) -> int:
    """What OpenBLAS reads as it loads, in its order; else one thread a core it may use."""
    for name in _BLAS_THREAD_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
