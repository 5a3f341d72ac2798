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
import contextlib
import os
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypedDict

TEMPLATE = "--nbsweep-template"
"""The argument that makes the process the fork template instead of a kernel."""
TEMPLATE_NAME = "nbsweep-forker"
"""The template's process name (``ps -o comm``); its kernels are ``python`` again."""
_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1
SETUP_SET_ENV = "_NBSWEEP_SETUP_SET"
"""In a kernel forked after a setup: the variables the setup set or removed (comma-separated)."""
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


class SetupRequest(TypedDict):
    """The notebook's setup cells, run once before the template's first fork (sent after
    its ready answer). Answered with a line per cell and a last ``SetupDone`` line."""

    cells: list[str]
    stream_limit: int
    env: dict[str, str]
    """Set before the setup runs, for the setup only (trials get their own)."""
    prelude: str
    """Run silently first, as in every trial (nbsweep's hooks)."""
    modules: dict[str, str]
    """``shell``, ``seeds`` and ``checks``: the files of ``kernel/setup_*.py``."""
    blas_threads: int
    """BLAS threads the setup runs with, as a fresh process would."""
    per_trial: list[str]
    """Variables each trial sets to its own value: a setup that reads one is not shared."""


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


def start_kernel(arguments: list[str], setup: "_Setup | None" = None) -> None:
    """Run ipykernel with ``arguments`` (``-f CONNECTION_FILE ...``) until it shuts down;
    with ``setup``, in the namespace and shell state the template's setup left."""
    sys.modules["debugpy"] = None  # type: ignore[assignment]  # ipykernel's import fails
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.clear_instance()  # a Session made in the template drops the child's messages
    if setup is None:
        app = IPKernelApp.instance()
        app.initialize(arguments)
    else:
        app = setup.start_kernel(IPKernelApp, arguments)
    del sys.modules["debugpy"]
    app.start()


class _Setup:
    """The setup the template ran: its shell, and what each trial's kernel takes from it."""

    def __init__(self, shell: Any, seeds: Any, env: dict[str, str], cwd: str) -> None:
        self.shell = shell
        self.seeds = seeds
        self.env_before = env
        self.cwd_before = cwd

    def environment(self, trial_env: dict[str, str]) -> dict[str, str]:
        """The trial's environment with what the setup changed in its own over it, as a
        fresh kernel running the setup cells would have it. The names it changed are
        listed (``SETUP_SET_ENV``): a trial's own variables, set later, leave them be."""
        env = dict(trial_env)
        changed = []
        for name, value in os.environ.items():
            if self.env_before.get(name) != value:
                env[name] = value
                changed.append(name)
        for name in self.env_before:
            if name not in os.environ:
                env.pop(name, None)
                changed.append(name)
        env[SETUP_SET_ENV] = ",".join(changed)
        return env

    def start_kernel(self, app_class: Any, arguments: list[str]) -> Any:
        """A kernel app whose shell runs in the setup's namespace, at its execution count,
        with its history and the shell state a setup may leave (cell file names for
        tracebacks, display formatters, event callbacks such as ``%matplotlib inline``'s)."""
        old = self.shell
        history = old.history_manager
        atexit.unregister(old.atexit_operations)  # the template's shell: not this kernel's
        type(old).clear_instance()
        app = app_class.instance(user_ns=old.user_ns)
        app.initialize(arguments)
        new = app.kernel.shell
        new.execution_count = old.execution_count
        new.history_manager.input_hist_parsed[:] = history.input_hist_parsed
        new.history_manager.input_hist_raw[:] = history.input_hist_raw
        new.history_manager.output_hist.update(history.output_hist)
        _carry_shell_state(old, new)
        seeds = self.seeds

        def before_first_cell(*_: object) -> None:
            # The kernel's own start draws from Python's random: the setup's random state
            # is put back after it, just before the trial's first cell.
            new.events.unregister("pre_run_cell", before_first_cell)
            seeds.in_child()

        new.events.register("pre_run_cell", before_first_cell)
        return app


def _carry_shell_state(old: Any, new: Any) -> None:
    new.compile._filename_map.update(old.compile._filename_map)
    for mime, formatter in old.display_formatter.formatters.items():
        target = new.display_formatter.formatters.get(mime)
        for table in ("type_printers", "deferred_printers", "singleton_printers"):
            theirs = getattr(formatter, table, None)
            mine = getattr(target, table, None)
            if isinstance(theirs, dict) and isinstance(mine, dict):
                mine.update(theirs)
    for event, callbacks in old.events.callbacks.items():
        for callback in callbacks:
            if getattr(callback, "__self__", None) is old:
                continue  # the old shell's own
            if callback not in new.events.callbacks.get(event, []):
                new.events.register(event, callback)


class _Template:
    """The fork template: imports what kernels share, runs the notebook's setup cells if
    asked, freezes its heap, then only forks. Between forks it has no thread, event loop,
    ZMQ context or socket (none survive a fork); it checks that before each fork."""

    def __init__(self) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None)
        self.libc.prctl(_PR_SET_NAME, TEMPLATE_NAME.encode(), 0, 0, 0)
        self.answers: IO[str] = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)  # what imports print goes to the template's log, not the answers
        self.requests: IO[str] = sys.stdin
        self.skipped = os.environ.pop(_SKIPPED_ENV, "")
        self.threadpoolctl: ModuleType | None = None
        self.setup: _Setup | None = None
        self.torch_threads: int | None = None

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
        # The requests come on a descriptor of their own: what a setup cell reads from its
        # stdin finds /dev/null, as a kernel's does, not the next request.
        self.requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        gc.collect()
        gc.freeze()  # the children share these pages; no collection copies them
        signal.signal(signal.SIGCHLD, _reap)
        self._answer({"ready": True, "skipped": self.skipped})
        for line in self.requests:
            request = json.loads(line)
            if "cells" in request:
                self._run_setup(request)
            else:
                self._fork(request)

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
        self._import_threadpoolctl()
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

    def _import_threadpoolctl(self) -> None:
        try:
            import threadpoolctl  # type: ignore[import-untyped]
        except ImportError:
            threadpoolctl = None
        self.threadpoolctl = threadpoolctl

    def _run_setup(self, request: SetupRequest) -> None:
        """Run the setup cells, answering after each; then make the template forkable again
        and say whether it is. A cell that fails ends the setup (nbsweep stops this template)."""
        import signal

        # The setup's own subprocesses are waited for by the setup (a reaper would make a
        # failed command look like a success); no kernel is forked during it.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            self._set_up(request)
        finally:
            signal.signal(signal.SIGCHLD, _reap)

    def _set_up(self, request: SetupRequest) -> None:
        import gc
        import socket
        import time
        from datetime import datetime, timezone

        modules = {
            which: _load("_nbsweep_setup_" + which, path)
            for which, path in request["modules"].items()
        }
        shell_module, checks = modules["shell"], modules["checks"]
        _path_as_a_kernel_has_it()
        os.environ.update(request["env"])
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # is_available() must not init CUDA
        setup = _Setup(None, modules["seeds"].SeedTracker(), dict(os.environ), os.getcwd())
        self._set_blas_threads(request["blas_threads"])
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        shell = setup.shell = shell_module.make_shell(request["stream_limit"])
        shell.run_cell(request["prelude"], store_history=False, silent=True)
        extensions = _shell_extensions(shell)
        setup.seeds.install()
        watch = checks.EnvironmentWatch(request["per_trial"])
        watch.install()
        problems: dict[str, tuple[int, str]] = {}
        for position, source in enumerate(request["cells"]):
            self._answer({"running": position})
            began = time.monotonic()
            outputs, error = shell_module.run_cell(shell, source)
            ran: dict[str, object] = {
                "ran": position,
                "outputs": outputs,
                "execution_count": shell.execution_count - 1,
                "seconds": round(time.monotonic() - began, 3),
            }
            if error is not None:
                ran["error"] = type(error).__name__ + ": " + str(error)  # no braces: see command
                self._answer(ran)
                self._answer({"done": True, "failed": position})
                return
            self._answer(ran)
            self._note_problems(problems, position, checks, (shell, extensions, watch))
        setup.seeds.uninstall()
        watch.uninstall()
        problem = self._make_forkable(problems, checks, (shell, extensions, watch))
        drawn = setup.seeds.drawn_unseeded()
        gc.collect()
        gc.freeze()
        self.setup = setup if problem is None else None
        self._answer(
            {
                "done": True,
                "problem": problem[1] if problem else None,
                "problem_cell": problem[0] if problem else None,
                "drawn_unseeded": drawn,
                "at": started,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )

    def _note_problems(
        self,
        problems: dict[str, tuple[int, str]],
        position: int,
        checks: ModuleType,
        watched: tuple[Any, dict[str, int], Any],
    ) -> None:
        """Remember the cell after which each check began to fail (it may pass again by
        the setup's end: a wandb run finished later, a BLAS pool shut down)."""
        now = _problems(checks, watched)
        for name, problem in now.items():
            if problem is None:
                problems.pop(name, None)
            elif name not in problems:
                problems[name] = (position, problem)

    def _make_forkable(
        self,
        problems: dict[str, tuple[int, str]],
        checks: ModuleType,
        watched: tuple[Any, dict[str, int], Any],
    ) -> tuple[int, str] | None:
        """Shut down what a fork can do without (a finished wandb's service, the BLAS and
        torch thread pools: each trial's kernel starts its own); the first cell whose
        effect remains, with it, or None if the template can fork."""
        import time

        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is None:
            wandb.teardown()
        if self.threadpoolctl is None:  # the setup loaded BLAS itself (no preload did)
            self._import_threadpoolctl()
        self.torch_threads = _shut_down_thread_pools(self.threadpoolctl)
        for _ in range(40):  # a pool's or a service's threads may still be ending
            left = _problems(checks, watched)
            failing = {name: problem for name, problem in left.items() if problem}
            if not failing or set(failing) - {"threads", "children"}:
                break
            time.sleep(0.025)
        if not failing:
            return None
        name, problem = next(iter(failing.items()))
        last = len(problems) and max(cell for cell, _ in problems.values())
        return problems.get(name, (last, problem))[0], problem

    def _set_blas_threads(self, count: int) -> None:
        """The preload loaded BLAS with one thread (forks need that); the setup runs with
        as many as a fresh process would use."""
        if self.threadpoolctl is None and "numpy" in sys.modules:
            self._import_threadpoolctl()
        if self.threadpoolctl is not None and "numpy" in sys.modules and not self.skipped:
            self.threadpoolctl.threadpool_limits(count, user_api="blas")

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

        from jupyter_client.jsonutil import json_default

        self.answers.write(json.dumps(answer, default=json_default) + "\n")
        self.answers.flush()

    def _child(self, request: ForkRequest) -> None:
        import signal

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)
        self.libc.prctl(_PR_SET_NAME, b"python", 0, 0, 0)
        self.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the template
        setup = self.setup
        env = request["env"] if setup is None else setup.environment(request["env"])
        if setup is None or os.getcwd() == setup.cwd_before:
            os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(env)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        # Closed through their file objects: at the kernel's exit those objects would
        # otherwise close their descriptors' numbers again, by then perhaps the notebook's.
        self.answers.close()
        self.requests.close()
        os.closerange(3, 1 << 16)
        if setup is None:
            self._as_a_fresh_process(env)
        else:
            self._set_thread_pools(env)
        start_kernel(
            ["-f", request["connection_file"], "--HistoryManager.hist_file=:memory:"], setup
        )

    def _as_a_fresh_process(self, env: dict[str, str]) -> None:
        # A fork copies the generators a fresh process seeds from entropy (Python's random
        # reseeds itself at fork; these do not), and the one-thread BLAS of the template.
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.seed()  # CUDA's generators too, lazily: it does not initialise CUDA
        self._set_thread_pools(env)

    def _set_thread_pools(self, env: dict[str, str]) -> None:
        if not self.skipped and self.threadpoolctl is not None and "numpy" in sys.modules:
            self.threadpoolctl.threadpool_limits(blas_threads(env), user_api="blas")
        torch = sys.modules.get("torch")
        if self.setup is not None and torch is not None and self.torch_threads:
            torch.set_num_threads(self.torch_threads)  # what the setup ran with


def _path_as_a_kernel_has_it() -> None:
    """The kernel's folder on ``sys.path`` where IPython puts it (before site-packages): a
    setup cell imports the notebook's own modules as a kernel's cell would."""
    if "" in sys.path or getattr(sys.flags, "safe_path", False):
        return
    where = next(
        (
            i
            for i, path in enumerate(sys.path)
            if Path(path).name in ("site-packages", "dist-packages")
        ),
        0,
    )
    sys.path.insert(where, "")


def _load(name: str, path: str) -> ModuleType:
    """One of nbsweep's ``kernel/setup_*.py``, loaded from its file: the template imports
    no nbsweep package, only what its kernels' notebooks import."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _problems(checks: ModuleType, watched: tuple[Any, dict[str, int], Any]) -> dict[str, Any]:
    """Each check's problem (None: none) now."""
    shell, extensions, environment = watched
    now = {check.__name__: check() for check in checks.CHECKS}
    now["shell"] = checks.shell_extensions(extensions, _shell_extensions(shell))
    now["environment"] = environment.problem()
    return now


def _shell_extensions(shell: Any) -> dict[str, int]:
    magics = shell.magics_manager.magics
    return {
        "magics": len(magics["line"]) + len(magics["cell"]),
        "extensions": len(shell.extension_manager.loaded),
        "input transformers": len(shell.input_transformers_post)
        + len(shell.input_transformers_cleanup),
        "AST transformers": len(shell.ast_transformers),
    }


def _shut_down_thread_pools(threadpoolctl: ModuleType | None) -> int | None:
    """OpenBLAS's pool (it starts again lazily at the template's next BLAS call, which never
    comes) and torch's intra-op pool (down to the calling thread; the count it had is given
    back, for each kernel to have it again)."""
    import ctypes

    if threadpoolctl is not None:
        for library in threadpoolctl.threadpool_info():
            if library.get("internal_api") == "openblas":
                with contextlib.suppress(OSError, AttributeError):
                    ctypes.CDLL(library["filepath"]).blas_thread_shutdown_()
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    threads = int(torch.get_num_threads())
    torch.set_num_threads(1)
    return threads


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _reap(signum: int, frame: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def blas_threads(env: dict[str, str]) -> int:
    """What OpenBLAS reads as it loads, in its order; else one thread a core it may use."""
    for name in _BLAS_THREAD_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
