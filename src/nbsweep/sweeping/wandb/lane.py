"""The agent's W&B reporting lane: wandb runs are opened, logged to and finished on one thread
of their own, in order, so that W&B's latency never sits between two trials."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

Warn = Callable[[str], None]


class WandbLane:
    """One ``nbsweep-wandb`` thread; what runs on it warns of a failure instead of raising."""

    def __init__(self, warn: Warn) -> None:
        self.warn = warn
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="nbsweep-wandb")
        self._backlog: deque[Future[None]] = deque()
        """Offline runs being written, oldest first. Each is written while the next trial
        runs (on a small machine the two share the CPU, but neither waits for the other); a
        hand-out waits for all but the newest, so they never pile up."""

    def submit(self, call: Callable[..., object], *args: Any) -> Future[None]:
        """Run ``call`` on the lane, after what is queued there; a failure is told, not
        raised: reporting trouble must not cost a trial. (A ``run_reporter.Submit``.)"""

        def guarded() -> None:
            try:
                call(*args)
            except Exception as error:  # wandb raises many types
                self.warn(f"W&B reporting failed: {type(error).__name__}: {error}")

        return self._thread.submit(guarded)

    def writing_offline(self, writing: Future[None]) -> None:
        """An offline run is being written: the next hand-out but one waits for it."""
        self._backlog.append(writing)

    def before_a_hand_out(self) -> list[Awaitable[None]]:
        """The offline runs to wait for before a trial is handed out: all but the newest."""
        waits: list[Awaitable[None]] = []
        while len(self._backlog) > 1:
            waits.append(asyncio.wrap_future(self._backlog.popleft()))
        return waits

    async def shutdown(self) -> None:
        """Wait until W&B has heard everything queued."""
        await asyncio.to_thread(self._thread.shutdown, wait=True)
