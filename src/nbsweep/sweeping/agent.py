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
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
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
from nbsweep.kernel.api import TRIAL_ENV
from nbsweep.kernel.executor import StopRequest, prepare_output_handling
from nbsweep.kernel.fork import Template, can_fork
from nbsweep.kernel.prestart import KernelRecipe, WarmKernel
from nbsweep.kernel.process import Kernel
from nbsweep.notebook import files
from nbsweep.notebook.redaction import Redactor
from nbsweep.options import AgentOptions
from nbsweep.sweeping.path import SweepPath
from nbsweep.trial.metrics import MetricRecord, Metrics
from nbsweep.trial.reporting import Reporter
from nbsweep.trial.result import TrialResult
from nbsweep.trial.run import RUNS_FOLDER, TrialSpec, run_trial_async

# A trial that runs this long has the next trial's kernel started beside it. Sooner, the
# kernel's start-up (a core for ~0.3 s, plus the preload) slows a short trial down on a
# small machine; a short trial's successor starts warming in the gap instead.
WARM_UP_AFTER = 0.5
# A forked kernel costs its trial ~70 ms of CPU, not ~0.35 s: it is started at once.
FORKED_WARM_UP_AFTER = 0.0


class SweepServer(Protocol):
    """W&B (``wandb_api.SweepService``) or a local sweep (``local.server.LocalSweepServer``).

    A server may also have ``stop_waiting()``: told to stop now (Ctrl-C twice, SIGTERM), the
    agent calls it so that a call waiting for an unreachable store gives up at once."""

    offline_runs: bool
    """Whether each trial's wandb run is an offline one (local sweeps)."""

    def sweep(self, path: SweepPath) -> dict[str, Any]: ...
    def create_agent(self, path: SweepPath, host: str) -> str: ...
    def heartbeat(self, agent_id: str, running: Mapping[str, bool]) -> list[dict[str, Any]]: ...
    def trial_environment(
        self, path: SweepPath, run_id: str, param_file: Path
    ) -> dict[str, str]: ...
    def record_metric(self, run_id: str, record: MetricRecord) -> None: ...
    def trial_finished(self, run_id: str, result: TrialResult) -> None: ...


def resolve_notebook(option: Path | None, program: Any) -> Path:
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
        self.warm: WarmKernel | None = None
        self.retiring: set[asyncio.Future[None]] = set()
        # wandb runs are opened, logged to and finished on one thread of their own, in
        # order, so that W&B's latency never sits between two trials.
        self.wandb_lane = ThreadPoolExecutor(1, thread_name_prefix="nbsweep-wandb")
        self.reporting: deque[Future[None]] = deque()
        """Offline runs being written, oldest first. Each is written while the next trial
        runs (on a small machine the two share the CPU, but neither waits for the other); a
        hand-out waits for all but the newest, so they never pile up."""
        self._notebook: tuple[tuple[int, int], NotebookNode, KernelRecipe] | None = None
        self.template: Template | None = None
        self.template_recipe: KernelRecipe | None = None
        self.forking_failed = False
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
        if self.warm is not None:
            warm, self.warm = self.warm, None
            await warm.discard()
        await asyncio.gather(*self.retiring, return_exceptions=True)
        if self.template is not None:
            template, self.template = self.template, None
            await asyncio.to_thread(template.stop)
        await asyncio.to_thread(self.wandb_lane.shutdown, wait=True)

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
            self.stop.stop("interrupted", now=self.stop.requested.is_set())

    async def _loop(self) -> int:
        sweep = await asyncio.to_thread(self.server.sweep, self.path)
        self.sweep_config = sweep.get("config") or None
        notebook = resolve_notebook(self.options.notebook, sweep.get("config", {}).get("program"))
        agent_id = await asyncio.to_thread(
            self.server.create_agent, self.path, socket.gethostname()
        )
        self.reporter.line(f"agent {agent_id} for sweep {self.path}: running {notebook}")
        trials = failures = 0
        self._warm_up(notebook)
        await asyncio.to_thread(prepare_output_handling)  # while the first kernel starts
        if self.options.report_to_wandb:
            # Imported here, before any trial, not first on the wandb lane: on CPython 3.11
            # (seen on 3.11.7) code compiled in one thread while another parses with ast can
            # fail ("AST constructor recursion depth mismatch"): wandb's import, beside this
            # thread reading a notebook's cells, failed and left every run unreported.
            import wandb  # noqa: F401
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
            if result.status == "failed":
                failures += 1
                if failures >= self.options.max_consecutive_failures:
                    raise AgentFailed(
                        f"{failures} trials failed in a row (--max-consecutive-failures "
                        f"{self.options.max_consecutive_failures}); the last: {result.reason} "
                        f"({result.output}). Fix the notebook, then start the agent again"
                    )
            elif result.status == "finished":
                failures = 0
        return EXIT_INTERRUPTED if self.interrupted else 0

    async def _ready_for_a_trial(self) -> None:
        """Take a trial only once a kernel is up for it and the offline runs before the last
        are written (both on other cores or threads): the trial's clock starts when it is
        handed out."""
        waits: list[Awaitable[Any]] = []
        if self.warm is not None:
            waits.append(self.warm.ready())
        while len(self.reporting) > 1:
            waits.append(asyncio.wrap_future(self.reporting.popleft()))
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
                    self.stop.stop("stopped")
                self.queue = deque(
                    c for c in self.queue if c.get("run_id") != command.get("run_id")
                )

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    def _read(self, notebook: Path) -> tuple[NotebookNode, KernelRecipe]:
        """The notebook and its kernels' recipe, made once and again when the file changes."""
        try:
            stat = notebook.stat()
        except OSError:
            files.read_notebook(notebook)  # raises NotebookError: says what is wrong
            raise
        key = (stat.st_mtime_ns, stat.st_size)
        if self._notebook is None or self._notebook[0] != key:
            nb = files.read_notebook(notebook)
            self._notebook = (key, nb, self._recipe(notebook, nb))
        return self._notebook[1], self._notebook[2]

    def _recipe(self, notebook: Path, nb: NotebookNode) -> KernelRecipe:
        settings = self.options.trial
        cwd = (settings.cwd or notebook.resolve().parent).resolve()
        preload = self.options.preload
        return KernelRecipe(
            settings.kernel_for(nb),
            cwd,
            {**os.environ, TRIAL_ENV: "1"},
            preload.code(preload.modules_for(nb, cwd, installs_run=settings.run_install_cells)),
        )

    def _warm_up(self, notebook: Path) -> None:
        """Start the next trial's kernel now, unless one is warming or nothing will use it."""
        if not self.options.warm_kernels or self.exit_requested or self.warm is not None:
            return
        try:
            recipe = self._read(notebook)[1]
            template = self._template_for(recipe)
            self.warm = WarmKernel(
                recipe, template, self._fork_failed, self.reporter.warn_once
            )
        except NbsweepError:
            self.warm = None  # the trial's own start reports what is wrong

    def _template_for(self, recipe: KernelRecipe) -> Template | None:
        """The template warm kernels are forked from, made anew when the recipe changes;
        None where forking cannot serve (said once)."""
        if self.options.kernel_start != "fork" or self.forking_failed:
            return None
        reason = can_fork(recipe.kernel_name, self.options.preload.cuda)
        if reason is not None:
            self._fork_failed(reason)
            return None
        stale = self.template_recipe != recipe
        if self.template is not None and (stale or not self.template.alive()):
            self.template.stop()
            self.template = None
        if self.template is None:
            self.template = Template(recipe.cwd, dict(recipe.env), recipe.preload_code)
            self.template_recipe = recipe
        return self.template

    def _fork_failed(self, reason: str) -> None:
        if not self.forking_failed:
            self.forking_failed = True
            self.reporter.warn(f"kernels start as fresh interpreters: {reason}")

    async def _kernel_for(self, notebook: Path) -> Kernel | None:
        """The warm kernel if it was made for this notebook as it is now, else None."""
        warm, self.warm = self.warm, None
        if warm is None:
            return None
        try:
            if warm.recipe == self._read(notebook)[1]:
                return await warm.take()
        except BaseException:
            await warm.discard()
            raise
        await warm.discard()
        return None

    def _on_wandb_lane(self, call: Callable[..., object], *args: Any) -> Future[None]:
        """Run ``call`` on the wandb thread, after what is queued there; a failure is told,
        not raised: reporting trouble must not cost a trial."""

        def guarded() -> None:
            try:
                call(*args)
            except Exception as error:  # wandb raises many types
                self.reporter.warn(f"W&B reporting failed: {type(error).__name__}: {error}")

        return self.wandb_lane.submit(guarded)

    def _retire(self, stopping: Awaitable[None]) -> None:
        task = asyncio.ensure_future(stopping)
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def _trial(
        self, agent_id: str, notebook: Path, command: dict[str, Any], warm_next: bool = True
    ) -> TrialResult:
        from nbsweep.sweeping import wandb_run
        from nbsweep.sweeping.run_reporter import RunMode, RunReporter

        run_id = str(command["run_id"])
        values = {
            name: entry.get("value") if isinstance(entry, dict) else entry
            for name, entry in (command.get("args") or {}).items()
        }
        try:
            # Ids from the server or the store: an id that would lead outside nbsweep-runs/
            # (or wandb/) fails this trial before anything is written.
            sweep = files.safe_id(self.path.sweep, "sweep id")
            output = Path(RUNS_FOLDER) / sweep / files.safe_id(run_id, "run id") / notebook.name
            param_file = wandb_run.write_param_file(
                self.options.wandb_dir, self.path.sweep, run_id, values
            )
        except (OutputError, UsageError) as error:  # a full disk fails this trial, not the agent
            saving = isinstance(error, OutputError)
            self.reporter.warn(f"run {run_id}: {error}" if saving else str(error))
            result = TrialResult(
                "failed",
                "cannot-save" if saving else "could-not-start",
                Path(),
                None,
                Metrics(),
                0.0,
                save_error=str(error) if saving else None,
                start_error=None if saving else str(error),
            )
            await asyncio.to_thread(self.server.trial_finished, run_id, result)
            return result
        spec = TrialSpec(
            notebook=notebook,
            values=list(values.items()),
            env=self.server.trial_environment(self.path, run_id, param_file),
            output=output,
            sweep_id=self.path.sweep,
            sweep_config=self.sweep_config,
            settings=self.options.trial,
        )
        nb, recipe = self._read(notebook)
        mode = RunMode.choose(
            nb, enabled=self.options.report_to_wandb, offline=self.server.offline_runs
        )
        wandb = RunReporter(
            mode,
            self.path,
            run_id,
            values,
            param_file,
            self.options.wandb_dir,
            self._on_wandb_lane,
            self.reporter.warn,
            offline=self.server.offline_runs,
            kernel_dir=recipe.cwd,
        )
        wandb.started()

        def on_metric(record: MetricRecord) -> None:
            self.server.record_metric(run_id, record)
            wandb.record(record)

        self.stop, self.current_run = StopRequest(), run_id
        self.reporter.line(f"run {run_id}: {_describe(values)}")
        beating = asyncio.ensure_future(self._heartbeat_while_running(agent_id, run_id))
        warming = None
        try:
            kernel = await self._kernel_for(notebook)
            if warm_next:
                forking = self.template is not None and not self.forking_failed
                delay = FORKED_WARM_UP_AFTER if forking else WARM_UP_AFTER
                warming = asyncio.get_running_loop().call_later(delay, self._warm_up, notebook)
            result = await run_trial_async(
                spec,
                self.reporter,
                self.stop,
                kernel=kernel,
                on_metric=on_metric,
                notebook=nb,
                retire=self._retire,
            )
        except NbsweepError as error:
            # A trial that cannot even start (a kernel that dies at once, values the notebook
            # refuses) is a failed trial: the sweep hears of it and the failure guard counts it.
            said = Redactor.from_environ({**os.environ, **spec.env}).text(str(error))
            self.reporter.warn(f"run {run_id}: {said}")
            result = TrialResult(
                "failed",
                "could-not-start",
                spec.output or Path(),
                None,
                Metrics(),
                0.0,
                start_error=said,
            )
        finally:
            if warming is not None:
                warming.cancel()
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            self.stop, self.current_run = None, None
        await asyncio.to_thread(self.server.trial_finished, run_id, result)
        if warming is not None:
            self._warm_up(notebook)  # a short trial: warm up in the gap instead
        reporting = wandb.finished(result)
        if mode is RunMode.OWNED_OFFLINE and reporting is not None:
            self.reporting.append(reporting)
        return result

    async def _heartbeat_while_running(self, agent_id: str, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_for(local=self.server.offline_runs))
            try:
                commands = await asyncio.to_thread(self.server.heartbeat, agent_id, {run_id: True})
            except NbsweepError as error:
                self.reporter.warn(f"heartbeat failed, the trial goes on: {error}")
                continue
            self._take(commands)


def _describe(values: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={value!r}" for name, value in values.items()) or "(defaults)"
