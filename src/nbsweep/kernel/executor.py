"""Execute a notebook's cells on a started ``Kernel``, with timeouts and stop requests.

Built on nbclient's cell execution (subclassed, as papermill does). Every way a run can end
(success, a raising cell, ``sys.exit``, a dead kernel, a timeout, a stop) comes back as an
``Outcome``; stopping means interrupt, a grace period, then kill. Knows nothing of W&B.
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat import NotebookNode

from nbsweep.kernel.process import Kernel
from nbsweep.notebook.redaction import Redactor, StreamRedactor
from nbsweep.options import ExecutionOptions
from nbsweep.status import EndReason, TrialStatus

# sys.exit(0), sys.exit() and `raise SystemExit` end a notebook successfully.
_SUCCESSFUL_EXIT_VALUES = ("", "0", "None")
# Characters of a stream message handled at a time: a huge print is cut into pieces of this
# size on its way to the side file, never copied whole.
_PIECE = 1 << 20


@dataclass
class Hooks:
    """Callbacks, called on the event loop, as execution goes."""

    cell_started: Callable[[int, int, int], None] = lambda index, number, total: None
    """(cell index, number among code cells starting at 1, number of code cells)."""
    cell_finished: Callable[[int, float], None] = lambda index, seconds: None
    stream: Callable[[str, str], None] = lambda name, text: None
    """(stream name, text), secrets redacted, as it comes."""
    overflow: Callable[[int, str, str], str] = lambda index, name, text: "nowhere"
    """(cell index, stream name, a piece of the text past the limit) -> where it was put."""


@dataclass(frozen=True)
class CellFailure:
    cell_index: int
    """Index in the executed notebook."""
    ename: str
    evalue: str
    traceback: tuple[str, ...]


@dataclass
class Outcome:
    status: TrialStatus
    reason: EndReason
    """finished, exited, cell-error, kernel-died, cell-timeout, trial-timeout, or the stop's."""
    failure: CellFailure | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    missing_variables: list[str] = field(default_factory=list)


def prepare_output_handling() -> None:
    """Build nbformat's output validator now: nbclient checks every output against the schema,
    and the first check compiles it (~60 ms, once per process). Call it while waiting for
    a kernel, not on the first cell's time."""
    from nbformat.v4 import output_from_msg

    output_from_msg({"header": {"msg_type": "stream"}, "content": {"name": "stdout", "text": ""}})


@dataclass(frozen=True)
class StartAt:
    """Where a kernel forked after a notebook's setup takes over."""

    cell: int = 0
    """The first cell the kernel runs."""
    executed: int = 0
    """How many cells the kernel ran before it (its execution count)."""


class StopRequest:
    """Set from signal handlers or other threads' ``call_soon_threadsafe``: stop this run."""

    def __init__(self) -> None:
        self.reason: EndReason | None = None
        self.requested = asyncio.Event()
        self.now = asyncio.Event()

    def stop(self, reason: EndReason, *, now: bool = False) -> None:
        """Interrupt the kernel; kill it after the grace period, or at once with ``now``."""
        if self.reason is None:
            self.reason = EndReason(reason)  # a caller's plain string, made the member
        self.requested.set()
        if now:
            self.now.set()


@dataclass
class _Stream:
    """One stream (stdout or stderr) of one cell, as it is assembled."""

    redactor: StreamRedactor
    kept: int = 0
    """Characters of it in the notebook."""
    where: str | None = None
    """The side file it goes to once past the limit."""
    template: dict[str, Any] = field(default_factory=dict)
    """Its last message, less the text: what held-back text is added to the cell as."""


class _TrialClient(NotebookClient):
    """nbclient's client, reporting live messages and cell progress through ``Hooks``."""

    def __init__(
        self,
        nb: NotebookNode,
        kernel: Kernel,
        hooks: Hooks,
        stream_limit: int,
        redactor: Redactor,
    ) -> None:
        super().__init__(
            nb,
            km=kernel.manager,
            timeout=None,  # deadlines are enforced by execute(), which can also kill
            allow_errors=False,
            record_timing=True,
            iopub_timeout=4,
        )
        self.kc = kernel.client
        self.hooks = hooks
        self.current_index = -1
        self.last_error: tuple[int, dict[str, Any]] | None = None
        self.liveness_polls: set[asyncio.Task[Any]] = set()
        self.stream_limit = stream_limit
        self.redactor = redactor
        self.streams: dict[int, dict[str, _Stream]] = {}
        self.on_cell_error = self._remember_error

    def process_message(
        self, msg: dict[str, Any], cell: NotebookNode, cell_index: int
    ) -> NotebookNode | None:
        if msg["msg_type"] == "stream":
            self._stream(msg, cell, cell_index)
            return None
        # Text held back (it may begin a secret) goes before what comes next, and at the
        # cell's end (its idle status).
        self.flush_streams(cell_index)
        return super().process_message(msg, cell, cell_index)

    def _stream(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int) -> None:
        """Redact the stream as one text (a secret may come a character per message), keep
        up to ``stream_limit`` characters of it in the notebook and hand the rest to
        ``Hooks.overflow``, a piece at a time."""
        content = msg["content"]
        name, text = content.get("name", "stdout"), content.get("text", "")
        streams = self.streams.setdefault(cell_index, {})
        stream = streams.get(name) or streams.setdefault(name, _Stream(self.redactor.stream()))
        stream.template = {**msg, "content": {**content, "text": ""}}
        kept = [
            self._take(stream, cell_index, name, stream.redactor.feed(text[at : at + _PIECE]))
            for at in range(0, len(text), _PIECE)
        ]
        self._add(stream, cell, cell_index, "".join(kept))

    def _take(self, stream: _Stream, cell_index: int, name: str, text: str) -> str:
        """Show ``text`` live; what of it the notebook keeps (the rest goes to the side file,
        and the notebook says once where)."""
        if not text:
            return ""
        self.hooks.stream(name, text)
        room = self.stream_limit - stream.kept
        if stream.where is None and len(text) <= room:
            stream.kept += len(text)
            return text
        if stream.where is not None:
            self.hooks.overflow(cell_index, name, text)
            return ""
        stream.where = self.hooks.overflow(cell_index, name, text[room:])
        return (
            f"{text[:room]}\n[nbsweep: {name} past {self.stream_limit:,} characters is not kept "
            f"in the notebook; the rest is in {stream.where}]\n"
        )

    def _add(self, stream: _Stream, cell: NotebookNode, cell_index: int, text: str) -> None:
        if text:
            content = {**stream.template["content"], "text": text}
            super().process_message({**stream.template, "content": content}, cell, cell_index)

    def flush_streams(self, cell_index: int) -> None:
        """Add the text each stream of the cell held back, redacted, to its outputs."""
        for name, stream in self.streams.get(cell_index, {}).items():
            held = self._take(stream, cell_index, name, stream.redactor.flush())
            self._add(stream, self.nb.cells[cell_index], cell_index, held)

    async def _async_poll_kernel_alive(self) -> None:
        # nbclient starts this per cell and forgets it when the cell is cancelled (a stop
        # that kills the kernel): remembered here, so that it is cancelled and awaited.
        task = asyncio.current_task()
        if task is not None:
            self.liveness_polls.add(task)
            task.add_done_callback(self.liveness_polls.discard)
        await super()._async_poll_kernel_alive()

    async def cancel_leftovers(self) -> None:
        """Cancel and await what nbclient left running, so nothing is destroyed pending."""
        leftovers = [task for task in self.liveness_polls if not task.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def _remember_error(self, cell: NotebookNode, cell_index: int, execute_reply: dict) -> None:
        self.last_error = (cell_index, execute_reply["content"])


async def execute(
    nb: NotebookNode,
    kernel: Kernel,
    options: ExecutionOptions,
    hooks: Hooks | None = None,
    stop: StopRequest | None = None,
    variables: Sequence[str] = (),
    redactor: Redactor | None = None,
    start: StartAt | None = None,
) -> Outcome:
    """Run the cells of ``nb`` (in place) on ``kernel`` from ``start`` on (the cells before
    it ran in the template the kernel was forked from); read ``variables`` at the end.
    ``redactor``: masks secrets in the streams as they are assembled.

    Leaves the kernel running: the caller stops it.
    """
    hooks = hooks or Hooks()
    stop = stop or StopRequest()
    client = _TrialClient(nb, kernel, hooks, options.stream_limit, redactor or Redactor(()))
    clock = _CellClock(client, hooks)
    aborted: list[EndReason] = []
    begin = start or StartAt()

    async def run_cells() -> None:
        await _record_language(client, kernel)
        for index, cell in enumerate(nb.cells):
            if aborted:
                return
            if index < begin.cell:
                continue
            await client.async_execute_cell(
                cell, index, execution_count=begin.executed + client.code_cells_executed + 1
            )

    running = asyncio.ensure_future(run_cells())
    await _supervise(running, kernel, options, stop, clock, aborted)
    await client.cancel_leftovers()
    for index in client.streams:  # a cell stopped before its end: its held-back text
        client.flush_streams(index)
    outcome = _outcome(running, client, aborted[0] if aborted else None)
    if outcome.status is TrialStatus.FINISHED and variables:
        await _read_variables(client, kernel, variables, outcome)
    return outcome


class _CellClock:
    """When the running cell started; tells ``Hooks`` as each cell starts and ends."""

    def __init__(self, client: _TrialClient, hooks: Hooks) -> None:
        nb = client.nb
        self.code_cells = [
            i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()
        ]
        self.client = client
        self.hooks = hooks
        self.started = time.monotonic()
        client.on_cell_execute = self.on_execute
        client.on_cell_executed = self.on_executed

    def on_execute(self, cell: NotebookNode, cell_index: int) -> None:
        self.client.current_index = cell_index
        self.started = time.monotonic()
        code_cells = self.code_cells
        position = code_cells.index(cell_index) + 1 if cell_index in code_cells else 0
        self.hooks.cell_started(cell_index, position, len(code_cells))

    def on_executed(
        self, cell: NotebookNode, cell_index: int, execute_reply: dict[str, Any]
    ) -> None:
        self.hooks.cell_finished(cell_index, time.monotonic() - self.started)


async def _supervise(
    running: asyncio.Future[None],
    kernel: Kernel,
    options: ExecutionOptions,
    stop: StopRequest,
    clock: _CellClock,
    aborted: list[EndReason],
) -> None:
    """Wait for the cells to run, enforcing the deadlines and a stop request. Why they are
    stopped goes into ``aborted`` before the interrupt, so that no further cell starts."""
    trial_deadline = _deadline(time.monotonic(), options.trial_timeout)
    while not running.done():
        cell_deadline = _deadline(clock.started, options.cell_timeout)
        deadline = min(trial_deadline, cell_deadline)
        waiting: asyncio.Future[Any] = asyncio.ensure_future(stop.requested.wait())
        await asyncio.wait(
            {running, waiting},
            timeout=max(0.0, deadline - time.monotonic()) if deadline < float("inf") else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
        waiting.cancel()
        if running.done():
            break
        if stop.requested.is_set():
            reason = stop.reason or EndReason.STOPPED
        elif time.monotonic() >= trial_deadline:
            reason = EndReason.TRIAL_TIMEOUT
        elif time.monotonic() >= cell_deadline:
            reason = EndReason.CELL_TIMEOUT
        else:
            continue
        aborted.append(reason)
        await _interrupt_then_kill(kernel, running, options.stop_grace, stop)


def _deadline(start: float, seconds: float | None) -> float:
    return start + seconds if seconds else float("inf")


async def _record_language(client: _TrialClient, kernel: Kernel) -> None:
    info = kernel.info
    if info is None:
        assert client.kc is not None
        reply = await client.async_wait_for_reply(client.kc.kernel_info())
        info = reply["content"] if reply is not None else {}
    if "language_info" in info:
        client.nb.metadata["language_info"] = info["language_info"]


async def _interrupt_then_kill(
    kernel: Kernel, running: asyncio.Future[None], grace: float, stop: StopRequest
) -> None:
    if not stop.now.is_set():
        await kernel.interrupt()
        now: asyncio.Future[Any] = asyncio.ensure_future(stop.now.wait())
        await asyncio.wait({running, now}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        now.cancel()
        await asyncio.gather(now, return_exceptions=True)
    if not running.done():
        await kernel.kill()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def _outcome(
    running: asyncio.Future[None], client: _TrialClient, aborted: EndReason | None
) -> Outcome:
    error = running.exception() if not running.cancelled() else None
    if aborted is not None:
        status = TrialStatus.FAILED if aborted.is_timeout else TrialStatus.STOPPED
        return Outcome(status, aborted, _failure(client, aborted))
    if error is None:
        return Outcome(TrialStatus.FINISHED, EndReason.FINISHED)
    if isinstance(error, DeadKernelError):
        died = EndReason.KERNEL_DIED
        return Outcome(TrialStatus.FAILED, died, _failure(client, died))
    if isinstance(error, CellExecutionError):
        if error.ename == "SystemExit" and error.evalue.strip() in _SUCCESSFUL_EXIT_VALUES:
            return Outcome(TrialStatus.FINISHED, EndReason.EXITED)
        raised = EndReason.CELL_ERROR
        return Outcome(TrialStatus.FAILED, raised, _failure(client, raised, error))
    raise error


_FAILURE_NAMES = {
    EndReason.KERNEL_DIED: ("DeadKernelError", "the kernel died while running this cell"),
    EndReason.CELL_TIMEOUT: ("Timeout", "the cell ran past its --timeout"),
    EndReason.TRIAL_TIMEOUT: ("Timeout", "the notebook ran past its --trial-timeout"),
}


def _failure(
    client: _TrialClient, reason: EndReason, error: CellExecutionError | None = None
) -> CellFailure | None:
    index = client.current_index
    if index < 0:
        return None
    if client.last_error is not None and client.last_error[0] == index:
        content = client.last_error[1]
        return CellFailure(
            index,
            str(content.get("ename", "")),
            str(content.get("evalue", "")),
            tuple(content.get("traceback", [])),
        )
    if error is not None:
        return CellFailure(index, error.ename, error.evalue, ())
    stopped = ("Stopped", f"stopped ({reason}) while running this cell")
    ename, evalue = _FAILURE_NAMES.get(reason, stopped)
    return CellFailure(index, ename, evalue, ())


async def _read_variables(
    client: _TrialClient, kernel: Kernel, names: Sequence[str], outcome: Outcome
) -> None:
    """Fetch the final values of ``names`` from the kernel as JSON-compatible values."""
    assert kernel.client is not None
    expressions = {
        # `name` is checked to be an identifier by the caller; nothing else is pasted.
        name: f"__import__('json').dumps({name}, default=lambda o: o.item() "
        "if hasattr(o, 'item') else repr(o))"
        for name in names
    }
    msg_id = kernel.client.execute(
        "", silent=True, store_history=False, user_expressions=expressions
    )
    reply = await client.async_wait_for_reply(msg_id)
    results = reply["content"].get("user_expressions", {}) if reply else {}
    for name in names:
        result = results.get(name, {})
        if result.get("status") != "ok":
            outcome.missing_variables.append(name)
            continue
        text = result.get("data", {}).get("text/plain", "")
        outcome.variables[name] = json.loads(ast.literal_eval(text))
