"""Kernels forked from a template process: a fresh interpreter nbsweep starts once per
agent and kernel recipe, which imports ipykernel, IPython, jupyter_client and the
notebook's preload modules, freezes its heap and then only forks. Each trial's kernel is a
child that never ran user code, with the trial's environment and working directory, up in
tens of milliseconds instead of a fresh interpreter's ~0.35 s of CPU. The template's code,
and each child's kernel start, are ``kernel/launcher.py``'s: the same as an exec'd kernel's.

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
from nbsweep.kernel.hooks import INSTALL_HOOKS
from nbsweep.kernel.launcher import (
    TEMPLATE,
    ForkRequest,
    PreloadRequest,
    SetupRequest,
    blas_threads,
    command,
)
from nbsweep.kernel.launcher import TEMPLATE_NAME as TEMPLATE_NAME
from nbsweep.kernel.shared_setup import SETUP_MODULES, SetupOutcome, SetupWork
from nbsweep.processes import die_with_parent


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
    """The template process; ``fork`` asks it for a kernel. With ``setup``, it runs the
    notebook's setup cells before its first fork (see ``kernel/shared_setup.py``); where it
    cannot share them it starts over without them, and ``setup_outcome`` says why. Stopped
    with ``stop``; it dies with this process (its kernels die with it)."""

    def __init__(
        self,
        cwd: Path,
        env: dict[str, str],
        preload_code: str | None,
        setup: SetupWork | None = None,
    ) -> None:
        self.cwd = cwd
        self.env = env
        self.preload_code = preload_code
        self.setup = setup
        self.setup_outcome: SetupOutcome | None = None
        self._lock = threading.Lock()
        self.ready = False
        self.preload_skipped = ""
        """Why the template could not keep the preload (then each kernel runs it)."""
        self._timed_out: int | None = None
        self._running: int | None = None
        self._stopped = False
        self._kernels: set[int] = set()
        """The kernels forked from it (its other children are the setup's)."""
        self._start_process()

    def _start_process(self) -> None:
        self.log = open(os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command(TEMPLATE),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=self.cwd,
            env=self.env,
            # Its own process group: a stop ends whatever the setup started with it.
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[bytes] = self.process.stdin
        self._stdout: IO[bytes] = self.process.stdout
        self._send(PreloadRequest(preload=self.preload_code))

    def _send(self, request: PreloadRequest | ForkRequest | SetupRequest) -> None:
        self._stdin.write(json.dumps(request).encode() + b"\n")
        self._stdin.flush()

    def _answer(self) -> dict[str, Any]:
        line = self._stdout.readline()
        if not line:
            raise KernelStartError("the kernel template exited")
        return dict(json.loads(line))

    def wait_ready(self) -> None:
        """Block until the template has imported everything and run the setup (call off
        the event loop)."""
        with self._lock:
            if not self.ready:
                self.preload_skipped = str(self._answer().get("skipped") or "")
                if self.setup is not None:
                    self.setup_outcome = self._run_setup(self.setup)
                    if not self.setup_outcome.shared:
                        self._start_over()
                self.ready = True

    def _run_setup(self, work: SetupWork) -> SetupOutcome:
        outcome = SetupOutcome(work)
        self._send(
            SetupRequest(
                cells=list(work.sources),
                stream_limit=work.stream_limit,
                env=dict(work.env),
                prelude=INSTALL_HOOKS,
                modules=SETUP_MODULES,
                blas_threads=blas_threads(self.env),
                per_trial=list(work.per_trial),
            )
        )
        watchdog: threading.Timer | None = None
        try:
            while True:
                answer = self._setup_answer(work)
                if watchdog is not None:
                    watchdog.cancel()
                if "running" in answer:
                    self._running = int(answer["running"])
                    if work.cell_timeout:
                        watchdog = self._watchdog(work.cell_timeout, self._running)
                        watchdog.start()
                elif "ran" in answer:
                    outcome.outputs.append(list(answer["outputs"]))
                    outcome.execution_counts.append(answer["execution_count"])
                    if answer.get("error"):
                        cell = work.file_cells[int(answer["ran"])]
                        outcome.why_not = f"setup cell {cell} failed: {answer['error']}"
                elif answer.get("done"):
                    return _finished(outcome, answer)
        except KernelStartError as error:
            if self._timed_out is None and self._running is not None:
                cell = work.file_cells[self._running]
                outcome.why_not = f"setup cell {cell} ended the template ({error})"
            elif self._timed_out is None:
                outcome.why_not = f"the setup's template ended: {error}"
            else:
                cell = work.file_cells[self._timed_out]
                outcome.why_not = f"setup cell {cell} ran past --timeout ({work.cell_timeout:g} s)"
            return outcome
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _setup_answer(self, work: SetupWork) -> dict[str, Any]:
        try:
            return self._answer()
        except ValueError as error:  # not JSON: the template is not answering
            raise KernelStartError(f"the kernel template failed: {error}") from None

    def _watchdog(self, seconds: float, position: int) -> threading.Timer:
        def time_out() -> None:
            self._timed_out = position
            self._kill()

        timer = threading.Timer(seconds, time_out)
        timer.daemon = True
        return timer

    def _start_over(self) -> None:
        """A template without the setup (trials then run every cell)."""
        if self._stopped:  # the agent is done with it: nothing starts again
            raise KernelStartError("the kernel template was stopped")
        self._close()
        self.setup = None
        self._start_process()
        self.preload_skipped = str(self._answer().get("skipped") or "")

    def fork(self, connection_file: str, cwd: str, env: dict[str, str], log: str) -> int:
        """A new kernel's PID (blocking: call off the event loop)."""
        self.wait_ready()
        with self._lock:
            try:
                request = ForkRequest(connection_file=connection_file, cwd=cwd, env=env, log=log)
                self._send(request)
                answer = self._answer()
            except (OSError, ValueError) as error:
                raise KernelStartError(f"the kernel template failed: {error}") from None
        if "error" in answer:
            raise KernelStartError(f"cannot fork a kernel: {answer['error']}")
        self._kernels.add(int(answer["pid"]))
        return int(answer["pid"])

    def shares_setup(self) -> SetupOutcome | None:
        """The setup its kernels start from, where it runs one and kept it."""
        outcome = self.setup_outcome
        return outcome if outcome is not None and outcome.shared else None

    def alive(self) -> bool:
        return self.process.poll() is None

    def _kill(self) -> None:
        """The template, its process group, and what its setup started in sessions of
        their own (``!cmd`` runs in one)."""
        if self.process.returncode is not None:
            return  # reaped: its pid and group may be someone else's now
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.process.pid).children():
                if child.pid in self._kernels:
                    continue  # a kernel: its trial stops it and what it started
                with contextlib.suppress(psutil.Error):
                    for process in [child, *child.children(recursive=True)]:
                        process.kill()
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.process.kill()

    def _close(self) -> None:
        self._kill()
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        self.process.wait()
        with contextlib.suppress(OSError, ValueError):
            self._stdout.close()
        self.log.close()

    def stop(self) -> None:
        """End the template and whatever its setup started (its kernels are their own)."""
        self._stopped = True
        self._close()


def _finished(outcome: SetupOutcome, answer: dict[str, Any]) -> SetupOutcome:
    work = outcome.work
    outcome.at, outcome.host = str(answer.get("at", "")), str(answer.get("host", ""))
    outcome.pid = int(answer.get("pid") or 0)
    if outcome.why_not is not None:
        return outcome
    problem = answer.get("problem")
    if problem:
        cell = work.file_cells[int(answer.get("problem_cell") or 0)]
        outcome.why_not = f"setup cell {cell}: {problem}"
        return outcome
    drawn = answer.get("drawn_unseeded") or []
    if drawn:
        outcome.warning = (
            f"the setup ({work.describe()}) drew from {', '.join(drawn)}'s random generator "
            "without seeding it: every trial shares what it drew (fresh kernels would not); "
            "seed it, or tag the cell nbsweep-per-trial"
        )
    outcome.shared = True
    return outcome


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


class ForkProvisioner(LocalProvisioner):
    """Launches the kernel by asking the template to fork, not by running its command."""

    template: Template | None = None
    log_path: str = os.devnull

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        assert self.template is not None
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or Path.cwd())
        assert self.parent is not None  # the kernel manager it serves
        connection_file = self.parent.connection_file
        pid = await asyncio.to_thread(self.template.fork, connection_file, cwd, env, self.log_path)
        # jupyter_client calls of its Popen only what _ForkedProcess has.
        self.process = _ForkedProcess(pid)  # type: ignore[assignment]
        self.pid = pid
        self.pgid = pid
        self.cwd = cwd
        return self.connection_info
