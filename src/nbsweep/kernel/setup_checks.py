"""Whether the template can still fork after a setup cell: a fork copies one thread and
no process, and every trial would share whatever the setup had open.

Each check reads ``/proc`` (no thread, no subprocess) and gives a sentence or None. The
template runs them after every setup cell, to name the cell that made the setup unforkable.
Loaded by the template from this file (see ``kernel/setup_shell.py``): standard library only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

_SOCKET_STATES = {"01": "connected", "0A": "listening"}
_EVENT_FILES = {
    "anon_inode:[eventpoll]": "an event loop",
    "anon_inode:[eventfd]": "an event descriptor (an event loop or a ZMQ context)",
    "anon_inode:inotify": "a file watcher",
}


def threads() -> str | None:
    others = [task for task in os.listdir("/proc/self/task") if int(task) != os.getpid()]
    if not others:
        return None
    names = sorted({_thread_name(task) for task in others})
    return f"it started {len(others)} thread(s) ({', '.join(names)})"


def _thread_name(task: str) -> str:
    try:
        with open(f"/proc/self/task/{task}/comm") as comm:
            return comm.read().strip()
    except OSError:  # it ended meanwhile
        return "ended"


def children() -> str | None:
    """Live children, and any other process in the template's process group (a daemonised
    grandchild keeps the group unless it left it)."""
    me = os.getpid()
    group = os.getpgid(0)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as file:
                stat = file.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, parent, process_group = fields[0], int(fields[1]), int(fields[2])
        if state != "Z" and (parent == me or (group == me and process_group == group)):
            found.append(f"{entry} ({stat[stat.index('(') + 1 : stat.rindex(')')]})")
    return None if not found else f"it started a process that is still running: {found[0]}"


def descriptors() -> str | None:
    """Sockets (listening, connected or a pair), event loops and GPU device files."""
    table: dict[str, str] | None = None
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, gone
        if target.startswith("socket:["):
            table = table if table is not None else _socket_table()
            return f"it holds a socket ({table.get(target[8:-1], 'a socket')})"
        if target in _EVENT_FILES:
            return f"it holds {_EVENT_FILES[target]}"
        if target.startswith(("/dev/nvidia", "/dev/dri")):
            return f"it opened the GPU ({target}): CUDA cannot cross a fork"
        if _is_users_file(int(fd), target):
            return f"it left a file open ({target}): each trial would share its offset"
    return None


def _is_users_file(fd: int, target: str) -> bool:
    """A regular file the notebook's code opened (not the standard streams, not a library's
    own file under the interpreter's prefix opened to read)."""
    if fd < 3 or not target.startswith("/") or target.startswith(("/dev/", "/proc/")):
        return False
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
            flags = int(info.read().split("flags:")[1].split()[0], 8)
    except (OSError, IndexError, ValueError):
        return False
    if flags & 0o3:  # open for writing
        return True
    return not target.startswith((sys.prefix, sys.base_prefix))


def _socket_table() -> dict[str, str]:
    """Socket inode -> what it is, from /proc/net."""
    table = {}
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{protocol}", encoding="ascii") as file:
                next(file)
                for line in file:
                    parts = line.split()
                    state = _SOCKET_STATES.get(parts[3], "open")
                    table[parts[9]] = f"{protocol} {state}"
        except (OSError, StopIteration):
            pass
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as file:
            next(file)
            for line in file:
                parts = line.split()
                listening = parts[3] == "00010000"
                table[parts[6]] = "unix " + ("listening" if listening else "connected")
    except (OSError, StopIteration):
        pass
    return table


def cuda() -> str | None:
    torch = sys.modules.get("torch")
    cuda_module = getattr(torch, "cuda", None)
    if cuda_module is not None and cuda_module.is_initialized():
        return "it initialised CUDA: CUDA cannot cross a fork"
    return None


def wandb_state() -> str | None:
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return None
    if getattr(wandb, "run", None) is not None:
        return "a wandb run is open (wandb.finish() it in the setup, or let it run per trial)"
    setup = sys.modules.get("wandb.sdk.wandb_setup")
    singleton = getattr(setup, "_singleton", None)
    if singleton is not None and getattr(singleton, "_connection", None) is not None:
        return "the wandb service it started is running"
    return None


def asyncio_loop() -> str | None:
    helpers = sys.modules.get("IPython.core.async_helpers")
    loop = getattr(helpers, "_asyncio_event_loop", None)
    if loop is not None and not loop.is_closed():
        return "it runs an asyncio event loop (top-level await)"
    return None


def shell_extensions(before: dict[str, int], now: dict[str, int]) -> str | None:
    """Magics, extensions and input transformers live in the shell, which each trial's
    kernel makes anew: a setup that added any cannot be shared."""
    for what, count in now.items():
        if count != before.get(what, 0):
            return f"it changed the shell's {what}"
    return None


CHECKS: tuple[Callable[[], str | None], ...] = (
    wandb_state,
    cuda,
    asyncio_loop,
    threads,
    children,
    descriptors,
)


def first_problem() -> str | None:
    """Why a fork is not safe now, or None."""
    for check in CHECKS:
        problem = check()
        if problem is not None:
            return problem
    return None


class EnvironmentWatch:
    """Notes which of ``names`` (the variables each trial sets: its run id, its metrics
    file...) the setup's own code reads: a fresh kernel would read the trial's value, the
    template has none. Reads by wandb and nbsweep, which look such variables up again
    inside each trial, do not count."""

    def __init__(self, names: list[str]) -> None:
        self.names = frozenset(names)
        self.read: list[str] = []
        self._original = os.environ

    def install(self) -> None:
        original, watch = self._original, self

        class _Watched(type(original)):  # type: ignore[misc]
            def __getitem__(self, key: str) -> str:
                if key in watch.names and key not in watch.read and not _trusted_caller():
                    watch.read.append(key)
                return str(super().__getitem__(key))

        watched = object.__new__(_Watched)
        watched.__dict__.update(original.__dict__)  # the same variables, not a copy
        os.environ = watched  # noqa: B003 - the same variables, watched

    def uninstall(self) -> None:
        os.environ = self._original  # noqa: B003 - the same variables again

    def problem(self) -> str | None:
        if not self.read:
            return None
        if self.read[0] == "NBSWEEP_METRICS_FILE":
            return "it logged a metric (nbsweep.log), which belongs to a trial"
        return f"it read {self.read[0]}, which each trial sets to its own value"


def _trusted_caller() -> bool:
    """A read by wandb or nbsweep on their own account; not one a notebook's
    ``nbsweep.log`` makes (that metric belongs to a trial)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in ("os", "_collections_abc"):
        frame = frame.f_back  # type: ignore[assignment]
    name = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    if not (name.split(".")[0] in ("wandb", "nbsweep") or name.startswith("_nbsweep_setup_")):
        return False
    while frame is not None:
        if frame.f_globals.get("__name__") == "nbsweep.kernel.api":
            return False
        frame = frame.f_back  # type: ignore[assignment]
    return True
