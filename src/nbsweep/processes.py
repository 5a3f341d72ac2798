"""Processes' lives: tie a child's to ours (kernels, agent workers), and tell whether the
process that holds a run is still there (local sweeps)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# Two reads of a process's start time can differ by a clock tick or a boot-time adjustment; a
# PID reused within a second of the original start would need the PID space to wrap that fast.
_START_TIME_TOLERANCE = 1.0


def die_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child receive ``signum`` when its parent dies.

    None where the platform has no such thing (the caller then relies on cleanup paths).
    """
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)

    return preexec


def become_subreaper() -> bool:
    """Have orphans of our descendants re-parented to us instead of init (Linux, as tini
    and container inits do): a kernel's daemon that detached itself (``setsid``, a double
    fork) then stays where ``kill_marked_children`` finds it. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def marked_children(name: str, value: str) -> list[psutil.Process]:
    """Our children whose environment has ``name=value``, with their descendants. As a
    subreaper, that includes every orphan of a process that carried the mark."""
    found: dict[int, psutil.Process] = {}
    for child in psutil.Process().children():
        try:
            if child.environ().get(name) != value:
                continue
            for process in [child, *child.children(recursive=True)]:
                found.setdefault(process.pid, process)
        except (psutil.Error, OSError):
            continue
    return list(found.values())


def reap(processes: list[psutil.Process]) -> None:
    """Collect the exit status of those that are our children (killed orphans), so that no
    zombie is left in the process table; others are their parents' to reap."""
    ours = os.getpid()
    for process in processes:
        with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
            if process.ppid() == ours:
                os.waitpid(process.pid, os.WNOHANG)


@dataclass(frozen=True)
class AgentIdentity:
    """The process holding a run: its machine's agent name, PID and start time, because PIDs
    get reused."""

    host: str
    """The name its machine's agents go by (``StoreOptions.agent_name``): the host name, or
    one per node where a cluster's nodes share a host name."""
    pid: int
    started: float  # psutil's create_time

    @classmethod
    def current(cls, name: str | None = None) -> AgentIdentity:
        """This process, on the machine whose agents go by ``name`` (None: the host name,
        ``StoreOptions``' default)."""
        return cls(name or socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def is_alive(self, here: str | None = None) -> bool:
        """False only when the process is seen gone (or its PID taken by another) from the
        machine named ``here`` (ours; None: the host name), which must be the process's own.

        Another machine's process cannot be checked: it counts as alive, and only its
        heartbeat can expire."""
        if self.host != (here or socket.gethostname()):
            return True
        try:
            process = psutil.Process(self.pid)
            started, zombie = process.create_time(), process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            return True  # it exists; another user's process is not ours to judge
        return not zombie and abs(started - self.started) < _START_TIME_TOLERANCE
