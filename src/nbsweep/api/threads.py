"""The API's functions work from a plain script, from a thread, and from a running event
loop (a Jupyter cell): the trial's or agent's loop then runs on a thread of its own, and
Ctrl-C (an interrupted cell) stops it as it stops the CLI."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TextIO, TypeVar

from nbsweep.errors import UsageError
from nbsweep.trial.reporting import Reporter

T = TypeVar("T")


def run_on_own_loop(
    make: Callable[[], Coroutine[Any, Any, T]],
    on_interrupt: Callable[[asyncio.AbstractEventLoop, bool], None],
) -> T:
    """``make()`` run to its end on an event loop of its own thread (this thread may run
    one already: a Jupyter cell). Ctrl-C while waiting calls ``on_interrupt(loop, now)``:
    ``now`` False the first time (a graceful stop), True after, as the CLI's signals do."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if threading.current_thread() is not threading.main_thread():
            return asyncio.run(make())
    outcome: dict[str, Any] = {}
    started = threading.Event()
    # Waited on instead of Thread.join: a KeyboardInterrupt inside join can leave the
    # thread marked as ended while it still runs.
    done = threading.Event()

    def body() -> None:
        async def main() -> T:
            outcome["loop"] = asyncio.get_running_loop()
            started.set()
            return await make()

        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error
        finally:
            started.set()
            done.set()

    worker = threading.Thread(target=body, name="nbsweep-api", daemon=True)
    worker.start()
    interrupts = 0
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            interrupts += 1
            started.wait()
            loop = outcome.get("loop")
            if loop is not None and not loop.is_closed():
                on_interrupt(loop, interrupts > 1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def reporter_for(progress: bool | TextIO) -> Reporter:
    """True: progress to stderr; False: none; a stream: progress to it."""
    if progress is True:
        return Reporter()
    if progress is False:
        return Reporter(io.StringIO(), tty=False)
    return Reporter(progress)


def require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise UsageError(f"{what} needs the main thread; leave it False on other threads")
