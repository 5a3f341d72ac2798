"""The kernels an agent's trials run in: each trial's kernel is started (and preloaded) while
the trial before it runs, forked from a template process where that can serve, and handed
over only if it was made for the notebook as it is now; used kernels stop in the background.

``KernelSupply`` reads the notebook once per change of the file (its mtime and size), so the
recipe a warm kernel was made from can be compared with the notebook a trial runs."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from nbsweep.errors import NbsweepError, ParameterError
from nbsweep.kernel.environment import trial_environment
from nbsweep.kernel.fork import Template, can_fork
from nbsweep.kernel.hooks import METRICS_FILE_ENV, TRIAL_FILE_ENV
from nbsweep.kernel.preload import Preload
from nbsweep.kernel.prestart import KernelRecipe, WarmKernel
from nbsweep.kernel.process import Kernel
from nbsweep.kernel.shared_setup import SetupOutcome, SetupWork
from nbsweep.notebook import files
from nbsweep.notebook.literals import to_literal
from nbsweep.notebook.redaction import Redactor
from nbsweep.notebook.setup import plan_setup
from nbsweep.notebook.wandb_way import analyse
from nbsweep.options import KernelStart, TrialSettings

# A trial that runs this long has the next trial's kernel started beside it. Sooner, an
# exec'd kernel's start-up (a core's worth of work, plus the preload) slows a short trial
# down on a small machine; a short trial's successor starts warming in the gap instead.
WARM_UP_AFTER = 0.5
# A forked kernel costs its trial a small part of an exec'd one's start: it starts at once.
FORKED_WARM_UP_AFTER = 0.0

Warn = Callable[[str], None]


@dataclass
class SetupContext:
    """What a setup runs with that belongs to the agent, not to one trial: the W&B
    environment every trial shares (its mode, project, sweep) and the sweep the notebook's
    ``wandb.sweep`` is given (through a trial file with no values)."""

    env: Mapping[str, str]
    per_trial: frozenset[str]
    """The variables each trial sets to its own value (its run id...)."""
    sweep_id: str | None
    sweep_config: dict[str, Any] | None
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nbsweep-setup-")))

    def environment(self, nb: NotebookNode, sweep_function: str | None) -> dict[str, str]:
        """The setup's variables for ``nb``, its trial file written."""
        chosen = analyse(nb, sweep_function).sweep_function()
        trial = {
            "values": {},
            "sweep_id": self.sweep_id,
            "sweep_config": self.sweep_config,
            "sweep_function": dataclasses.asdict(chosen) if chosen else None,
        }
        try:
            text = to_literal(trial)
        except ParameterError:  # a sweep config with a value no literal holds
            text = to_literal({**trial, "sweep_config": None})
        path = self.folder / "setup-trial.py"
        path.write_text(text, encoding="utf-8")
        return {**self.env, TRIAL_FILE_ENV: str(path)}

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class KernelSupply:
    """Warm kernels for one agent's trials, and the stopping of used ones."""

    def __init__(
        self,
        settings: TrialSettings,
        preload: Preload,
        *,
        warm: bool,
        kernel_start: KernelStart,
        warn: Warn,
        warn_once: Warn,
        say: Warn = lambda line: None,
    ) -> None:
        """``warm``: start each trial's kernel ahead of it; ``kernel_start``: "fork" (from a
        template, where that can serve) or "exec"; ``warn_once``: a note said once;
        ``say``: a line of news (what came of a shared setup)."""
        self.settings = settings
        self.preload = preload
        self.warm_kernels = warm
        self.kernel_start = kernel_start
        self.warn = warn
        self.warn_once = warn_once
        self.warm: WarmKernel | None = None
        self.retiring: set[asyncio.Future[None]] = set()
        self._notebook: tuple[tuple[int, int], NotebookNode, KernelRecipe] | None = None
        self.template: Template | None = None
        self.template_recipe: KernelRecipe | None = None
        self.forking_failed = False
        self.say = say
        self.setup: SetupContext | None = None
        """Set by ``share_setup``: templates run the notebook's setup cells once."""
        self._said: set[tuple[str, ...]] = set()

    def read(self, notebook: Path) -> tuple[NotebookNode, KernelRecipe]:
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
        cwd = self.settings.kernel_cwd(notebook)
        modules = self.preload.modules_for(nb, cwd, installs_run=self.settings.run_install_cells)
        return KernelRecipe(
            self.settings.kernel_for(nb),
            cwd,
            trial_environment(),
            self.preload.code(modules),
            self._setup_work(nb),
        )

    def share_setup(self, context: SetupContext) -> None:
        """Have templates run the notebook's setup cells once, for every trial to fork from."""
        self.setup = context
        self._notebook = None  # recipes made before this have no setup

    def _setup_work(self, nb: NotebookNode) -> SetupWork | None:
        if self.setup is None:
            return None
        settings = self.settings
        plan = plan_setup(
            nb,
            config_var=settings.config_var,
            sweep_function=settings.sweep_function,
            run_install_cells=settings.run_install_cells,
        )
        if not plan.cells:
            return None
        env = self.setup.environment(nb, settings.sweep_function)
        execution = settings.execution
        return SetupWork(
            plan.fork_index,
            plan.cells,
            plan.sources,
            plan.file_cells,
            plan.fork_point,
            env,
            execution.cell_timeout,
            execution.stream_limit,
            tuple(sorted(self.setup.per_trial | {METRICS_FILE_ENV})),
        )

    def _on_setup(self, outcome: SetupOutcome) -> None:
        """Say once per setup what came of it."""
        work = outcome.work
        key = (*work.sources, outcome.why_not or "", outcome.warning or "")
        if key in self._said:
            return
        self._said.add(key)
        if outcome.shared:
            self.say(
                f"setup ({work.describe()}) ran once in the kernel template; each trial's "
                f"kernel forks from it and starts at {work.fork_point}"
            )
        else:
            # What a setup cell raised may quote a secret, as a trial's error may.
            why_not = Redactor.from_environ(trial_environment()).text(outcome.why_not or "")
            self.warn(f"setup not shared: {why_not}; every trial runs every cell")
        if outcome.warning:
            self.warn(outcome.warning)

    @property
    def warm_up_delay(self) -> float:
        """How long a trial runs before the next one's kernel is started beside it."""
        forking = self.template is not None and not self.forking_failed
        return FORKED_WARM_UP_AFTER if forking else WARM_UP_AFTER

    def warm_up(self, notebook: Path) -> None:
        """Start the next trial's kernel now, unless one is warming or warm kernels are off."""
        if not self.warm_kernels or self.warm is not None:
            return
        try:
            recipe = self.read(notebook)[1]
            template = self._template_for(recipe)
            self.warm = WarmKernel(
                recipe, template, self._fork_failed, self.warn_once, self._on_setup
            )
        except NbsweepError:
            self.warm = None  # the trial's own start reports what is wrong

    def ready(self) -> Awaitable[bool] | None:
        """What to wait for before a trial is handed out: the warming kernel, if any."""
        return None if self.warm is None else self.warm.ready()

    def _template_for(self, recipe: KernelRecipe) -> Template | None:
        """The template warm kernels are forked from, made anew when the recipe changes;
        None where forking cannot serve (said once)."""
        if self.kernel_start != "fork":
            self._setup_not_forked(recipe, "--kernel-start exec runs each kernel afresh")
            return None
        if self.forking_failed:
            self._setup_not_forked(recipe, "kernels are not forked")
            return None
        reason = can_fork(recipe.kernel_name, self.preload.cuda)
        if reason is not None:
            self._fork_failed(reason)
            self._setup_not_forked(recipe, reason)
            return None
        stale = self.template_recipe != recipe
        if self.template is not None and (stale or not self.template.alive()):
            if not stale:
                again = "; the setup runs again" if self.template.shares_setup() else ""
                self.warn(
                    f"the kernel template (pid {self.template.process.pid}) died: "
                    f"starting a new one{again}"
                )
            self.template.stop()
            self.template = None
        if self.template is None:
            self.template = Template(
                recipe.cwd, dict(recipe.env), recipe.preload_code, recipe.setup
            )
            self.template_recipe = recipe
        return self.template

    def _setup_not_forked(self, recipe: KernelRecipe, reason: str) -> None:
        if recipe.setup is not None:
            self.warn_once(f"setup not shared: {reason}; every trial runs every cell")

    def _fork_failed(self, reason: str) -> None:
        if self.template is not None and not self.template.alive():
            return  # it died: the next warm-up replaces it, and says so
        if not self.forking_failed:
            self.forking_failed = True
            self.warn(f"kernels start as fresh interpreters: {reason}")

    async def take(self, notebook: Path) -> Kernel | None:
        """The warm kernel if it was made for this notebook as it is now, else None."""
        warm, self.warm = self.warm, None
        if warm is None:
            return None
        try:
            if warm.recipe == self.read(notebook)[1]:
                return await warm.take()
        except BaseException:
            await warm.discard()
            raise
        await warm.discard()
        return None

    def retire(self, stopping: Awaitable[None]) -> None:
        """Let a used kernel stop in the background; ``wind_down`` waits for it."""
        task = asyncio.ensure_future(stopping)
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def wind_down(self) -> None:
        """Stop the idle warm kernel and the template; wait for used kernels to go."""
        if self.warm is not None:
            warm, self.warm = self.warm, None
            await warm.discard()
        await asyncio.gather(*self.retiring, return_exceptions=True)
        if self.template is not None:
            template, self.template = self.template, None
            await asyncio.to_thread(template.stop)
        if self.setup is not None:
            self.setup.close()
