"""One Jupyter kernel process: start it (before its trial is known, if you like), stop it,
and make sure nothing it started survives.

Knows nothing of notebooks, trials or W&B.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psutil
from jupyter_client import AsyncKernelManager
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

from nbsweep.errors import KernelStartError
from nbsweep.processes import die_with_parent

_PYTHON_KERNEL_NAMES = ("python3", "python", "")


class _InterpreterKernelSpecs(KernelSpecManager):
    """Resolves ``python3``/``python`` to this interpreter's ipykernel, so a venv just works."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name.lower() in _PYTHON_KERNEL_NAMES:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name=f"Python {sys.version_info.major}.{sys.version_info.minor}",
                language="python",
                metadata={"debugger": False},
            )
        return super().get_kernel_spec(kernel_name)


class Kernel:
    """A kernel process and a connected client.

    ``start`` returns once the kernel answers, so it can be called ahead of time; ``stop``
    shuts it down and then kills its whole process tree, whatever state it is in.
    """

    def __init__(self, kernel_name: str = "python3", startup_timeout: float = 60.0) -> None:
        self.kernel_name = kernel_name or "python3"
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

    async def start(self, cwd: Path, env: Mapping[str, str]) -> None:
        """Start the kernel in ``cwd`` with exactly ``env`` and wait until it answers."""
        try:
            await self.manager.start_kernel(
                cwd=str(cwd),
                env=dict(env),
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
        provisioner = self.manager.provisioner
        self.pid = getattr(provisioner, "pid", None)
        self.remember_processes()
        self.client = self.manager.client()
        self.client.start_channels()
        ready = asyncio.ensure_future(self.client.wait_for_ready(timeout=self.startup_timeout))
        died = asyncio.ensure_future(self._died())
        await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        died.cancel()
        problem = "it exited" if not ready.done() else ready.exception()
        if problem is not None:
            ready.cancel()
            await asyncio.gather(ready, died, return_exceptions=True)
            await self.stop(graceful=False)
            last = " | ".join(self.log_tail(3).splitlines()) or "nothing"
            raise KernelStartError(
                f"kernel {self.kernel_name!r} did not start ({problem}); it last wrote: {last}"
            ) from None
        self.client.allow_stdin = False

    async def _died(self) -> None:
        """Returns once the kernel process has exited (it may die before it answers)."""
        while await self.is_alive():
            await asyncio.sleep(0.1)

    async def update_environment(self, env: Mapping[str, str]) -> None:
        """Set variables in a kernel started before its trial was known (a warm kernel)."""
        if not env:
            return
        from nbsweep.literals import to_literal

        code = f"__import__('os').environ.update({to_literal(dict(env))})"
        if not await self.execute_silently(code, self.startup_timeout):
            raise KernelStartError("cannot set the trial's environment in the kernel")

    async def execute_silently(self, code: str, timeout: float) -> bool:
        """Run ``code`` outside the notebook (no history, no outputs); True if it succeeded."""
        assert self.client is not None
        try:
            reply = await self.client.execute_interactive(
                code, silent=True, store_history=False, timeout=timeout
            )
        except (TimeoutError, RuntimeError):
            return False
        return bool(reply["content"]["status"] == "ok")

    def remember_processes(self) -> None:
        """Note the kernel's process tree, so children that leave its group are still found."""
        if self.pid is None:
            return
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for process in [root, *root.children(recursive=True)]:
                self._known_processes.setdefault(process.pid, process)

    async def is_alive(self) -> bool:
        return bool(await self.manager.is_alive())

    async def interrupt(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await self.manager.interrupt_kernel()

    async def kill(self) -> None:
        """SIGKILL the kernel's process group and every process it is known to have started."""
        self.remember_processes()
        pgid = getattr(self.manager.provisioner, "pgid", None)
        if pgid:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        for process in self._known_processes.values():
            with contextlib.suppress(psutil.Error):
                process.kill()
        # Until they are gone the kernel still looks alive to anyone who asks. /proc shows a
        # killed multi-threaded process as a zombie before waitpid() can reap it, so ask both.
        await _wait_gone(list(self._known_processes.values()), timeout=5)
        deadline = time.monotonic() + 5
        while await self.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self, graceful: bool = True) -> None:
        """Shut down (politely if ``graceful``), then kill what is left and wait for it to go."""
        self.remember_processes()
        if graceful and self.client is not None:
            with contextlib.suppress(Exception):
                await self.manager.shutdown_kernel(now=False)
        await self.kill()
        with contextlib.suppress(Exception):
            await self.manager.shutdown_kernel(now=True)
        await _wait_gone(list(self._known_processes.values()), timeout=5)
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
