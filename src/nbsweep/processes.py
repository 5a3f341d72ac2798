"""Tie a child process's life to ours (Linux), for kernels and agent workers."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


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
