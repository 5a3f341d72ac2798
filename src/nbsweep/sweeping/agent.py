"""``nbsweep agent``: ask the sweep's server for trials, run each through the trial runner,
heartbeat while it runs, stop it when told, and exit cleanly on Ctrl-C or SIGTERM.

The server is anything with ``create_agent`` / ``heartbeat`` / ``sweep`` (``SweepService``
for W&B; the local engine plugs in the same way), so this loop owns no protocol."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, Protocol

from nbformat import NotebookNode

from nbsweep.errors import (
    EXIT_INTERRUPTED,
    AgentFailed,
    NbsweepError,
    OutputError,
    UsageError,
)
from nbsweep.kernel.environment import trial_environment
from nbsweep.kernel.executor import StopRequest, prepare_output_handling
from nbsweep.kernel.supply import KernelSupply, SetupContext
from nbsweep.notebook.redaction import Redactor
from nbsweep.options import AgentOptions
from nbsweep.status import EndReason, TrialStatus
from nbsweep.sweeping.path import PER_RUN_VARIABLES, SweepPath
from nbsweep.sweeping.wandb import runs
from nbsweep.sweeping.wandb.lane import WandbLane
from nbsweep.sweeping.wandb.run_reporter import RunMode, RunReporter
from nbsweep.trial.metrics import MetricRecord, Metrics
from nbsweep.trial.reporting import Reporter
from nbsweep.trial.result import TrialResult
from nbsweep.trial.run import run_trial_async
from nbsweep.trial.spec import TrialSpec, run_output


class SweepServer(Protocol):
    """W&B (``sweeping.wandb.service.SweepService``) or a local sweep
    (``local.server.LocalSweepServer``).

    A server may also have ``stop_waiting()``: told to stop now (Ctrl-C twice, SIGTERM), the
    agent calls it so that a call waiting for an unreachable store gives up at once."""

    offline_runs: bool
    """Whether each trial's wandb run is an offline one (local sweeps)."""

    def sweep(self, path: SweepPath) -> dict[str, Any]: ...
    def prepare(self) -> None:
        """Load what hand-outs need (called while the first kernel starts)."""

    def create_agent(self, path: SweepPath, host: str) -> str: ...
    def heartbeat(self, agent_id: str, running: Mapping[str, bool]) -> list[dict[str, Any]]: ...
    def run_environment(self, path: SweepPath, run_id: str, param_file: Path) -> dict[str, str]: ...
    def record_metric(self, run_id: str, record: MetricRecord) -> None: ...
    def trial_finished(self, run_id: str, result: TrialResult) -> None: ...


def resolve_notebook(option: Path | None, program: object) -> Path:
    """``--notebook``, else the sweep's ``program:`` relative to the cwd, as wandb agent does."""
    notebook = option or (Path(str(program)) if program else None)
    if notebook is None:
        raise UsageError("the sweep has no program: pass the notebook with --notebook NB")
    if notebook.suffix != ".ipynb":
        raise UsageError(
            f"the sweep's program {str(notebook)!r} is not a notebook: pass --notebook NB, "
            "or run it with plain `wandb agent`"
        )
    if not notebook.is_file():
        raise UsageError(f"notebook {str(notebook)!r} not found (paths are relative to the cwd)")
    return notebook


class Agent:
    """The sweep loop: asks the server for trials, runs them one at a time, heartbeats while
    one runs, and keeps the count of trials and of failures in a row. Kernels come from a
    ``KernelSupply``; W&B hears of each trial on a ``WandbLane``."""

    def __init__(
        self,
        server: SweepServer,
        path: SweepPath,
        options: AgentOptions,
        reporter: Reporter,
        *,
        handle_signals: bool = True,
    ) -> None:
        """``handle_signals``: Ctrl-C and SIGTERM stop the agent (main thread only); else
        ``interrupt`` does, from the loop's thread."""
        self.handle_signals = handle_signals
        self.server = server
        self.path = path
        self.options = options
        self.reporter = reporter
        self.stop: StopRequest | None = None
        self.current_run: str | None = None
        self.exit_requested = False
        self.interrupted = False
        self.queue: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self.kernels = KernelSupply(
            options.trial,
            options.preload,
            warm=options.warm_kernels,
            kernel_start=options.kernel_start,
            warn=reporter.warn,
            warn_once=reporter.warn_once,
            say=reporter.line,
        )
        self.wandb_lane = WandbLane(reporter.warn)
        self.heartbeat = options.heartbeat_for(local=server.offline_runs)
        """Seconds between heartbeats while a trial runs."""
        self.sweep_config: dict[str, Any] | None = None
        """The sweep's config as its server holds it (the notebook's wandb.sweep sees it)."""

    async def run(self) -> int:
        """Run trials until done; the exit code (0 done, 1 failures, 130 interrupted)."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM) if self.handle_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            return await self._loop()
        finally:
            try:
                await self._wind_down()
            finally:
                for signum in signals:
                    loop.remove_signal_handler(signum)

    def interrupt(self) -> None:
        """What Ctrl-C does: the first finishes the current trial and exits, the next
        stops it now."""
        self._on_signal(signal.SIGINT)

    async def _wind_down(self) -> None:
        """Stop the idle warm kernel, wait for used kernels to go and for W&B to hear all."""
        await self.kernels.wind_down()
        await self.wandb_lane.shutdown()

    def _on_signal(self, signum: int) -> None:
        self.interrupted = True
        self.wake.set()
        if signum == signal.SIGINT and not self.exit_requested:
            self.exit_requested = True
            if self.current_run:
                self.reporter.warn(
                    "finishing the current trial, then exiting (Ctrl-C again to stop it now)"
                )
            return
        self.exit_requested = True
        stop_waiting = getattr(self.server, "stop_waiting", None)
        if stop_waiting is not None:
            stop_waiting()
        if self.stop is not None:
            self.reporter.warn("stopping the current trial now")
            self.stop.stop(EndReason.INTERRUPTED, now=self.stop.requested.is_set())

    async def _loop(self) -> int:
        agent_id, notebook = await self._start()
        trials = failures = 0
        while not self.exit_requested:
            if self.options.count is not None and trials >= self.options.count:
                break
            await self._ready_for_a_trial()
            if self.exit_requested:
                break
            if not self.queue:
                self._take(await asyncio.to_thread(self.server.heartbeat, agent_id, {}))
            if not self.queue:
                if not self.exit_requested:
                    await self._sleep(self.options.poll)
                continue
            command = self.queue.popleft()
            last = self.options.count is not None and trials + 1 >= self.options.count
            result = await self._trial(agent_id, notebook, command, warm_next=not last)
            trials += 1
            if result.status is TrialStatus.FAILED:
                failures += 1
                if failures >= self.options.max_consecutive_failures:
                    raise AgentFailed(
                        f"{failures} trials failed in a row (--max-consecutive-failures "
                        f"{self.options.max_consecutive_failures}); the last: {result.reason} "
                        f"({result.output}). Fix the notebook, then start the agent again"
                    )
            elif result.status is TrialStatus.FINISHED:
                failures = 0
        return EXIT_INTERRUPTED if self.interrupted else 0

    async def _start(self) -> tuple[str, Path]:
        """Join the sweep, and start what the first trial needs; its agent id and notebook."""
        sweep = await asyncio.to_thread(self.server.sweep, self.path)
        self.sweep_config = sweep.get("config") or None
        notebook = resolve_notebook(self.options.notebook, sweep.get("config", {}).get("program"))
        agent_id = await asyncio.to_thread(
            self.server.create_agent, self.path, socket.gethostname()
        )
        self.reporter.line(f"agent {agent_id} for sweep {self.path}: running {notebook}")
        if self.options.setup_once:
            self.kernels.share_setup(self._setup_context())
        self._warm_up(notebook)
        self.server.prepare()  # while the first kernel starts
        await asyncio.to_thread(prepare_output_handling)
        if self.options.report_to_wandb:
            # Imported here, before any trial, not first on the wandb lane: on CPython 3.11
            # (seen on 3.11.7) code compiled in one thread while another parses with ast can
            # fail ("AST constructor recursion depth mismatch"): wandb's import, beside this
            # thread reading a notebook's cells, failed and left every run unreported.
            import wandb  # noqa: F401
        return agent_id, notebook

    def _setup_context(self) -> SetupContext:
        """What the notebook's setup runs with: the W&B environment every trial shares."""
        env = self.server.run_environment(self.path, "setup", Path(os.devnull))
        shared = {name: value for name, value in env.items() if name not in PER_RUN_VARIABLES}
        return SetupContext(shared, PER_RUN_VARIABLES, self.path.sweep, self.sweep_config)

    async def _ready_for_a_trial(self) -> None:
        """Take a trial only once a kernel is up for it and the offline runs before the last
        are written (both on other cores or threads): the trial's clock starts when it is
        handed out."""
        waits: list[Awaitable[Any]] = []
        warming = self.kernels.ready()
        if warming is not None:
            waits.append(warming)
        waits.extend(self.wandb_lane.before_a_hand_out())
        ready = asyncio.ensure_future(asyncio.gather(*waits, return_exceptions=True))
        self.wake.clear()
        woken = asyncio.ensure_future(self.wake.wait())
        # A signal while waiting (a preload can take minutes) ends the wait: the loop then
        # sees exit_requested and takes no trial.
        await asyncio.wait({ready, woken}, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        if not ready.done():
            ready.cancel()
        await asyncio.gather(ready, woken, return_exceptions=True)

    def _take(self, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            kind = command.get("type")
            if kind in ("run", "resume"):
                self.queue.append(command)
            elif kind == "exit":
                self.reporter.line("the sweep server says exit")
                self.exit_requested = True
            elif kind == "stop":
                if command.get("run_id") == self.current_run and self.stop is not None:
                    self.reporter.line(f"run {self.current_run}: stop requested by the sweep")
                    self.stop.stop(EndReason.STOPPED)
                self.queue = deque(
                    c for c in self.queue if c.get("run_id") != command.get("run_id")
                )

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    def _warm_up(self, notebook: Path) -> None:
        """Start the next trial's kernel now, unless the agent is exiting."""
        if not self.exit_requested:
            self.kernels.warm_up(notebook)

    async def _trial(
        self, agent_id: str, notebook: Path, command: dict[str, Any], warm_next: bool = True
    ) -> TrialResult:
        run_id = str(command["run_id"])
        values = _values(command)
        try:
            output, param_file = self._trial_files(run_id, notebook, values)
        except (OutputError, UsageError) as error:  # a full disk fails this trial, not the agent
            saving = isinstance(error, OutputError)
            self.reporter.warn(f"run {run_id}: {error}" if saving else str(error))
            reason = EndReason.CANNOT_SAVE if saving else EndReason.COULD_NOT_START
            result = _not_run(reason, Path(), str(error))
            await asyncio.to_thread(self.server.trial_finished, run_id, result)
            return result
        spec = TrialSpec(
            notebook=notebook,
            values=list(values.items()),
            env=self.server.run_environment(self.path, run_id, param_file),
            output=output,
            sweep_id=self.path.sweep,
            sweep_config=self.sweep_config,
            settings=self.options.trial,
        )
        nb, recipe = self.kernels.read(notebook)
        run_reporter = self._run_reporter(nb, recipe.cwd, run_id, values, param_file)
        run_reporter.started()
        result, warm_up_due = await self._run_watched(
            agent_id, spec, nb, values, run_reporter, warm_next
        )
        await asyncio.to_thread(self.server.trial_finished, run_id, result)
        if warm_up_due:
            self._warm_up(notebook)  # a short trial: warm up in the gap instead
        reporting = run_reporter.finished(result)
        if run_reporter.mode is RunMode.OWNED_OFFLINE and reporting is not None:
            self.wandb_lane.writing_offline(reporting)
        return result

    def _trial_files(
        self, run_id: str, notebook: Path, values: Mapping[str, Any]
    ) -> tuple[Path, Path]:
        """Where the trial's notebook is saved, and its param file (written now)."""
        # Ids from the server or the store: an id that would lead outside nbsweep-runs/
        # (or wandb/) fails this trial before anything is written.
        output = run_output(notebook, self.path.sweep, run_id)
        param_file = runs.write_param_file(self.options.wandb_dir, self.path.sweep, run_id, values)
        return output, param_file

    def _run_reporter(
        self,
        nb: NotebookNode,
        kernel_dir: Path,
        run_id: str,
        values: Mapping[str, Any],
        param_file: Path,
    ) -> RunReporter:
        offline = self.server.offline_runs
        mode = RunMode.choose(nb, enabled=self.options.report_to_wandb, offline=offline)
        return RunReporter(
            mode,
            self.path,
            run_id,
            values,
            param_file,
            self.options.wandb_dir,
            self.wandb_lane.submit,
            self.reporter.warn,
            offline=offline,
            kernel_dir=kernel_dir,
        )

    async def _run_watched(
        self,
        agent_id: str,
        spec: TrialSpec,
        nb: NotebookNode,
        values: Mapping[str, Any],
        run_reporter: RunReporter,
        warm_next: bool,
    ) -> tuple[TrialResult, bool]:
        """Run the trial, heartbeating so that a stop reaches it; its result, and whether
        the next kernel's warm-up was due during it (then it is due now if not begun)."""
        run_id = run_reporter.run_id

        def on_metric(record: MetricRecord) -> None:
            self.server.record_metric(run_id, record)
            run_reporter.record(record)

        self.stop, self.current_run = StopRequest(), run_id
        self.reporter.line(f"run {run_id}: {_describe(values)}")
        beating = asyncio.ensure_future(self._heartbeat_while_running(agent_id, run_id))
        warming = None
        try:
            kernel = await self.kernels.take(spec.notebook)
            if warm_next:
                delay = self.kernels.warm_up_delay
                warming = asyncio.get_running_loop().call_later(delay, self._warm_up, spec.notebook)
            result = await run_trial_async(
                spec,
                self.reporter,
                self.stop,
                kernel=kernel,
                on_metric=on_metric,
                notebook=nb,
                retire=self.kernels.retire,
            )
        except NbsweepError as error:
            result = self._could_not_start(run_id, spec, error)
        finally:
            if warming is not None:
                warming.cancel()
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            self.stop, self.current_run = None, None
        return result, warming is not None

    def _could_not_start(self, run_id: str, spec: TrialSpec, error: NbsweepError) -> TrialResult:
        """A trial that cannot even start (a kernel that dies at once, values the notebook
        refuses) is a failed trial: the sweep hears of it and the failure guard counts it."""
        said = Redactor.from_environ(trial_environment(spec.env)).text(str(error))
        self.reporter.warn(f"run {run_id}: {said}")
        return _not_run(EndReason.COULD_NOT_START, spec.output or Path(), said)

    async def _heartbeat_while_running(self, agent_id: str, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                commands = await asyncio.to_thread(self.server.heartbeat, agent_id, {run_id: True})
            except NbsweepError as error:
                self.reporter.warn(f"heartbeat failed, the trial goes on: {error}")
                continue
            self._take(commands)


def _values(command: Mapping[str, Any]) -> dict[str, Any]:
    """A run command's parameter values (W&B sends each as ``{"value": v}``)."""
    return {
        name: entry.get("value") if isinstance(entry, dict) else entry
        for name, entry in (command.get("args") or {}).items()
    }


def _not_run(reason: EndReason, output: Path, message: str) -> TrialResult:
    """A trial that never ran: its notebook could not be saved (``cannot-save``), or it
    could not start (``could-not-start``); ``message`` says why."""
    saving = reason is EndReason.CANNOT_SAVE
    return TrialResult(
        TrialStatus.FAILED,
        reason,
        output,
        None,
        Metrics(),
        0.0,
        save_error=message if saving else None,
        start_error=None if saving else message,
    )


def _describe(values: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={value!r}" for name, value in values.items()) or "(defaults)"
