"""One Jupyter kernel process: start it (before its trial is known, if you like), stop it,
and make sure nothing it started survives.

Knows nothing of notebooks, trials or W&B.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import zmq
import zmq.asyncio
from jupyter_client import AsyncKernelManager
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

from nbsweep.errors import KernelStartError
from nbsweep.kernel import launcher
from nbsweep.kernel.fork import ForkProvisioner, Template
from nbsweep.processes import become_subreaper, die_with_parent, marked_children, reap
from nbsweep.status import ExitPlan

_PYTHON_KERNEL_NAMES = ("python3", "python", "")
# Set in each kernel's environment, so that whatever it starts carries it, detached or not.
KERNEL_MARK_ENV = "NBSWEEP_KERNEL_MARK"
FIRST = asyncio.FIRST_COMPLETED
T = TypeVar("T")
# How long a kernel asked to shut down may take (atexit handlers, a wandb run finishing
# its upload) before it is killed.
SHUTDOWN_GRACE = 10.0
# What a kill skips that a polite exit would do: exit handlers, threads Python waits for, an
# open wandb run. Compared with the same expression in the fresh kernel.
_EXIT_WORK = (
    "(__import__('atexit')._ncallbacks(), "
    "sum(not t.daemon for t in __import__('threading').enumerate()), "
    "getattr(__import__('sys').modules.get('wandb'), 'run', None) is not None)"
)
# Set before a polite shutdown where no file is open for writing: the kernel then ends
# right after its last exit handler, skipping the interpreter's teardown (with torch loaded,
# a large share of a trial's end, and it loses nothing: exit handlers, wandb's included,
# have run, and Python joined its threads before them).
_SKIP_TEARDOWN = "__import__('sys')._nbsweep_skip_teardown = True"


@dataclass(frozen=True)
class _ExitWork:
    handlers: int
    threads: int
    wandb_run: bool
    files: frozenset[tuple[str, str]]
    """Files open for writing (path, mode): an unclosed file is flushed on a polite exit."""


class _KernelGone(Exception):
    """The kernel process exited while nbsweep waited for it."""


class _InterpreterKernelSpecs(KernelSpecManager):
    """Resolves ``python3``/``python`` to this interpreter's ipykernel, so a venv just works."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name.lower() in _PYTHON_KERNEL_NAMES:
            return KernelSpec(
                argv=launcher.command(
                    "-f", "{connection_file}", "--HistoryManager.hist_file=:memory:"
                ),
                display_name=f"Python {sys.version_info.major}.{sys.version_info.minor}",
                language="python",
                metadata={"debugger": False},
            )
        return super().get_kernel_spec(kernel_name)


RECONNECT_MS = 10
"""How often the client retries connecting to a kernel that has not bound its sockets yet."""


class Kernel:
    """A kernel process and a connected client.

    ``start`` returns once the kernel answers, so it can be called ahead of time; ``stop``
    shuts it down and then kills its whole process tree, whatever state it is in.
    """

    def __init__(
        self,
        kernel_name: str = "python3",
        startup_timeout: float = 60.0,
        template: Template | None = None,
    ) -> None:
        self.kernel_name = kernel_name or "python3"
        self.template = template
        """Fork the kernel from this template instead of starting an interpreter."""
        self.startup_timeout = startup_timeout
        # Unix sockets in a folder of our own, not TCP ports: kernels started at the same
        # instant by parallel agents cannot race for a port (jupyter_client picks a free
        # one, then the kernel binds it), and ipykernel has no unencrypted-TCP warning.
        self._sockets = tempfile.mkdtemp(prefix="nbsweep-kernel-")
        self.manager = AsyncKernelManager(
            kernel_name=self.kernel_name,
            kernel_spec_manager=_InterpreterKernelSpecs(),
            transport="ipc",
            ip=os.path.join(self._sockets, "kernel"),
        )
        self.client: AsyncKernelClient | None = None
        self.pid: int | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="nbsweep-kernel-", suffix=".log", delete=False
        )
        self._known_processes: dict[int, psutil.Process] = {}
        self._final_log = ""
        self.info: dict[str, Any] | None = None
        """The kernel_info reply's content, once the kernel has answered."""
        self._fresh_exit_work: _ExitWork | None = None
        self.env: dict[str, str] = {}
        """The kernel's environment as far as nbsweep set it."""
        self.mark = uuid.uuid4().hex

    async def start(self, cwd: Path, env: Mapping[str, str]) -> None:
        """Start the kernel in ``cwd`` with exactly ``env`` and wait until it answers."""
        await self.launch(cwd, env)
        await self.wait_ready()

    async def launch(self, cwd: Path, env: Mapping[str, str]) -> None:
        """Start the kernel process in ``cwd`` with exactly ``env``; do not wait for it.

        The process boots on another core while the caller prepares the notebook."""
        self.env = dict(env)
        become_subreaper()
        if self.template is not None:
            provisioner = ForkProvisioner(
                kernel_id=uuid.uuid4().hex,
                kernel_spec=self.manager.kernel_spec,
                parent=self.manager,
            )
            provisioner.template = self.template
            provisioner.log_path = self._log.name
            self.manager.kernel_id = provisioner.kernel_id
            self.manager.provisioner = provisioner
        try:
            await self.manager.start_kernel(
                cwd=str(cwd),
                env={**env, KERNEL_MARK_ENV: self.mark},
                stdout=self._log,
                stderr=self._log,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        except NoSuchKernel:
            installed = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
            raise KernelStartError(
                f"no Jupyter kernel named {self.kernel_name!r} is installed (installed: "
                f"{installed}); install it or pass --kernel NAME"
            ) from None
        except (OSError, ValueError) as error:
            raise KernelStartError(f"cannot start kernel {self.kernel_name!r}: {error}") from None
        self.pid = getattr(self.manager.provisioner, "pid", None)
        self.remember_processes(children=False)  # just launched: it has started none yet
        self.client = self.manager.client()
        # The kernel binds its sockets only after this (a forked one soon, an exec'd one
        # later); a connect that finds no socket yet waits ZMQ's default reconnect interval,
        # long beside a forked kernel's whole start-up.
        self.client.context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        # No stdin: a cell that asks for input fails at once instead of waiting forever.
        self.client.start_channels(stdin=False)

    async def wait_ready(self) -> None:
        """Wait until the launched kernel answers on shell and iopub; raise if it cannot."""
        if self.info is not None:
            return
        try:
            await self._while_alive(self._answer(), self.startup_timeout)
        except (Exception, asyncio.CancelledError) as error:
            problem = str(error) or type(error).__name__
            await self.stop(graceful=False)
            if isinstance(error, asyncio.CancelledError):
                raise
            last = " | ".join(self.log_tail(3).splitlines()) or "nothing"
            raise KernelStartError(
                f"kernel {self.kernel_name!r} did not start ({problem}); it last wrote: {last}"
            ) from None
        self._fresh_exit_work = await self._exit_work()

    async def _while_alive(self, work: Awaitable[T], timeout: float) -> T:
        """``work``'s result; raises _KernelGone if the kernel exits first, TimeoutError
        after ``timeout`` seconds. ``work`` is cancelled either way."""
        task = asyncio.ensure_future(work)
        died = asyncio.ensure_future(self._died())
        try:
            await asyncio.wait({task, died}, timeout=timeout, return_when=FIRST)
            if task.done():
                return task.result()
            if died.done():
                raise _KernelGone("it exited")
            raise TimeoutError(f"no answer in {timeout:g} s")
        finally:
            for pending in (task, died):
                pending.cancel()
            await asyncio.gather(task, died, return_exceptions=True)

    async def _answer(self) -> None:
        """Ask for kernel_info until both its reply (shell) and the matching idle status
        (iopub) arrive: then both channels are connected. jupyter_client's wait_for_ready
        adds a fixed 200 ms of flushing iopub after that; messages for other requests are
        told apart by their parent anyway, so nothing needs flushing."""
        assert self.client is not None
        asked: set[str] = set()
        replied: dict[str, Any] | None = None
        idle = False
        while replied is None or not idle:
            # iopub is PUB/SUB: what the kernel publishes before our subscription is
            # connected is lost, so ask again until an idle for one of our requests shows.
            asked.add(self.client.kernel_info())
            until = time.monotonic() + 1.0
            while time.monotonic() < until and (replied is None or not idle):
                channel, message = await self._next_message(until)
                if message is None or message["parent_header"].get("msg_id") not in asked:
                    continue
                if channel == "shell" and message["msg_type"] == "kernel_info_reply":
                    replied = message
                    # The idle follows the reply within milliseconds, unless it was lost.
                    until = min(until, time.monotonic() + 0.05)
                elif message["msg_type"] == "status":
                    idle = idle or message["content"].get("execution_state") == "idle"
        self.client._handle_kernel_info_reply(replied)
        self.info = replied["content"]

    async def _next_message(self, until: float) -> tuple[str, dict[str, Any] | None]:
        """The next message on shell or iopub before ``until``, with its channel's name."""
        assert self.client is not None
        channels = {"shell": self.client.shell_channel, "iopub": self.client.iopub_channel}
        for name, channel in channels.items():
            if await channel.msg_ready():
                return name, await channel.get_msg(timeout=0)
        poller = zmq.asyncio.Poller()
        for channel in channels.values():
            poller.register(channel.socket, zmq.POLLIN)
        timeout_ms = max(0, int((until - time.monotonic()) * 1000))
        ready = dict(await poller.poll(timeout_ms))
        for name, channel in channels.items():
            if channel.socket in ready:
                return name, await channel.get_msg(timeout=0)
        return "", None

    async def _died(self) -> None:
        """Returns once the kernel process has exited (it may die before it answers)."""
        while await self.is_alive():
            await asyncio.sleep(0.1)

    async def update_environment(self, env: Mapping[str, str]) -> None:
        """Set variables in a kernel started before its trial was known (a warm kernel)."""
        changed = {name: value for name, value in env.items() if self.env.get(name) != value}
        if not changed:
            return
        from nbsweep.notebook.literals import to_literal

        # A variable the notebook's setup set itself (a kernel forked after it lists them)
        # keeps the setup's value, as it would in a fresh kernel that ran the setup.
        code = (
            "(lambda os, new: os.environ.update({k: v for k, v in new.items() if k not in "
            f"os.environ.get({launcher.SETUP_SET_ENV!r}, '').split(',')}}))"
            f"(__import__('os'), {to_literal(changed)})"
        )
        # Not waited for: the kernel runs requests in order, so it is done before the first
        # cell, and a kernel that cannot do this cannot run that cell either.
        self.send_silently(code)
        self.env.update(changed)

    def send_silently(self, code: str) -> None:
        """Queue ``code`` to run before whatever is sent next, without waiting for it."""
        assert self.client is not None
        self.client.execute(code, silent=True, store_history=False)

    async def retire(self, finished: bool) -> None:
        """Stop a kernel whose trial is over: politely where its notebook ``finished`` and
        left work for a polite exit to do, else by a kill (which then loses nothing)."""
        plan = ExitPlan.POLITE if finished else ExitPlan.KILL
        try:
            if finished:
                plan = await self.exit_plan()
            if plan is ExitPlan.POLITE_NO_TEARDOWN:
                await self.execute_silently(_SKIP_TEARDOWN, SHUTDOWN_GRACE)
        finally:
            await self.stop(graceful=plan is not ExitPlan.KILL)

    async def execute_silently(self, code: str, timeout: float) -> bool:
        """Run ``code`` outside the notebook (no history, no outputs); True if it succeeded
        (False also if the kernel died or did not answer in ``timeout`` seconds)."""
        assert self.client is not None
        request = self.client.execute_interactive(
            code, silent=True, store_history=False, timeout=timeout
        )
        try:
            reply = await self._while_alive(request, timeout)
        except (TimeoutError, RuntimeError, _KernelGone):
            return False
        return bool(reply["content"]["status"] == "ok")

    async def rehearse(self) -> None:
        """Run a printing cell that leaves no trace (no history, no execution count, its
        output unread): a fresh kernel's first cell and first print cost it a few ms more."""
        assert self.client is not None
        request = self.client.execute_interactive(
            "print(' ', end='')",
            store_history=False,
            output_hook=lambda message: None,
            timeout=self.startup_timeout,
        )
        with contextlib.suppress(TimeoutError, RuntimeError, _KernelGone):
            await self._while_alive(request, self.startup_timeout)

    async def _exit_work(self) -> _ExitWork | None:
        assert self.client is not None
        request = self.client.execute_interactive(
            "",
            silent=True,
            store_history=False,
            user_expressions={"work": _EXIT_WORK},
            timeout=self.startup_timeout,
        )
        try:
            reply = await self._while_alive(request, self.startup_timeout)
            text = reply["content"]["user_expressions"]["work"]["data"]["text/plain"]
            handlers, threads, wandb_run = ast.literal_eval(text)
            assert self.pid is not None
            files = psutil.Process(self.pid).open_files()
        except (TimeoutError, RuntimeError, KeyError, ValueError, _KernelGone, psutil.Error):
            return None
        writing = frozenset((f.path, f.mode) for f in files if f.mode != "r")
        return _ExitWork(int(handlers), int(threads), bool(wandb_run), writing)

    async def exit_plan(self) -> ExitPlan:
        """How to stop a kernel whose notebook finished, losing nothing a polite exit does:
        kill it if it has nothing to do at exit beyond what the fresh kernel had; a polite
        exit without teardown if it opened no file for writing (nbsweep's launcher only);
        else a whole polite exit."""
        if self._fresh_exit_work is None or not await self.is_alive():
            return ExitPlan.POLITE
        now, fresh = await self._exit_work(), self._fresh_exit_work
        if now == fresh:
            return ExitPlan.KILL
        if now is not None and now.files == fresh.files:
            return ExitPlan.POLITE_NO_TEARDOWN
        return ExitPlan.POLITE

    def remember_processes(self, children: bool = True) -> None:
        """Note the kernel's process tree, so children that leave its group are still found
        (finding them reads the whole process table)."""
        if self.pid is None:
            return
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for process in [root, *(root.children(recursive=True) if children else ())]:
                self._known_processes.setdefault(process.pid, process)

    async def is_alive(self) -> bool:
        return bool(await self.manager.is_alive())

    async def interrupt(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await self.manager.interrupt_kernel()

    async def kill(self) -> None:
        """SIGKILL the kernel's process group and every process it is known to have started."""
        if self.pid is None:  # stopped while it was being launched
            self.pid = getattr(self.manager.provisioner, "pid", None)
        self.remember_processes()
        pgid = getattr(self.manager.provisioner, "pgid", None)
        if pgid:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        for process in self._known_processes.values():
            with contextlib.suppress(psutil.Error):
                process.kill()
        # Orphans the kernel's processes left (re-parented to us, the subreaper) carry its mark.
        orphans = marked_children(KERNEL_MARK_ENV, self.mark)
        for process in orphans:
            with contextlib.suppress(psutil.Error):
                process.kill()
        # Until they are gone the kernel still looks alive to anyone who asks. /proc shows a
        # killed multi-threaded process as a zombie before waitpid() can reap it, so ask both.
        await _wait_gone([*self._known_processes.values(), *orphans], timeout=5)
        deadline = time.monotonic() + 5
        while await self.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # The kernel is reaped by its manager; what it started is now ours to reap.
        reap([p for p in [*self._known_processes.values(), *orphans] if p.pid != self.pid])

    async def stop(self, graceful: bool = True, grace: float = SHUTDOWN_GRACE) -> None:
        """Shut down (politely if ``graceful``: up to ``grace`` seconds for the kernel's own
        exit handlers), then kill what is left and wait for it to go."""
        self.remember_processes()
        if graceful and self.client is not None and await self.is_alive():
            self.client.shutdown()
            # jupyter_client's shutdown_kernel interrupts first and polls every 100 ms; a
            # kernel that was asked nicely exits within tens of milliseconds.
            deadline = time.monotonic() + grace
            while await self.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        await self.kill()
        if self.client is not None:
            self.client.stop_channels()
        with contextlib.suppress(Exception):
            await self.manager.cleanup_resources()
        if not self._log.closed:
            self._final_log = self._read_log()
            self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
        shutil.rmtree(self._sockets, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the kernel process wrote to its own stdout/stderr."""
        text = self._final_log if self._log.closed else self._read_log()
        return "\n".join(text.splitlines()[-lines:])

    def _read_log(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._log.flush()
            return Path(self._log.name).read_text(encoding="utf-8", errors="replace")
        return ""


async def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    """Wait until each process has exited (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(process) for process in processes):
            return
        await asyncio.sleep(0.02)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
