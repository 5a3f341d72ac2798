"""The kernels an agent's trials run in: each trial's kernel is started (and preloaded) while
the trial before it runs, forked from a template process where that can serve, and handed
over only if it was made for the notebook as it is now; used kernels stop in the background.

``KernelSupply`` reads the notebook once per change of the file (its mtime and size), so the
recipe a warm kernel was made from can be compared with the notebook a trial runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from nbformat import NotebookNode

from nbsweep.errors import NbsweepError
from nbsweep.kernel.environment import trial_environment
from nbsweep.kernel.fork import Template, can_fork
from nbsweep.kernel.preload import Preload
from nbsweep.kernel.prestart import KernelRecipe, WarmKernel
from nbsweep.kernel.process import Kernel
from nbsweep.notebook import files
from nbsweep.options import KernelStart, TrialSettings

# A trial that runs this long has the next trial's kernel started beside it. Sooner, an
# exec'd kernel's start-up (a core's worth of work, plus the preload) slows a short trial
# down on a small machine; a short trial's successor starts warming in the gap instead.
WARM_UP_AFTER = 0.5
# A forked kernel costs its trial a small part of an exec'd one's start: it starts at once.
FORKED_WARM_UP_AFTER = 0.0

Warn = Callable[[str], None]


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
    ) -> None:
        """``warm``: start each trial's kernel ahead of it; ``kernel_start``: "fork" (from a
        template, where that can serve) or "exec"; ``warn_once``: a note said once."""
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
        )

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
            self.warm = WarmKernel(recipe, template, self._fork_failed, self.warn_once)
        except NbsweepError:
            self.warm = None  # the trial's own start reports what is wrong

    def ready(self) -> Awaitable[bool] | None:
        """What to wait for before a trial is handed out: the warming kernel, if any."""
        return None if self.warm is None else self.warm.ready()

    def _template_for(self, recipe: KernelRecipe) -> Template | None:
        """The template warm kernels are forked from, made anew when the recipe changes;
        None where forking cannot serve (said once)."""
        if self.kernel_start != "fork" or self.forking_failed:
            return None
        reason = can_fork(recipe.kernel_name, self.preload.cuda)
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
