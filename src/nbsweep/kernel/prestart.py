"""Kernels started before their trial, so that a trial begins on one that is up.

``WarmKernel``: the agent starts the next trial's kernel (forked from a template, or a fresh
interpreter) while the current trial runs, with the notebook's imports preloaded. A kernel
is never reused: each trial gets a fresh one. ``EarlyKernel``: ``nbsweep run`` is one
process per trial, so it cannot warm a kernel ahead of time; the next best thing is to
launch it first, so that it boots (~0.3 s, on another core) while this process imports the
rest of nbsweep, reads the values and, under ``wandb agent``, opens the W&B run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nbsweep.errors import KernelStartError, UsageError
from nbsweep.kernel.environment import trial_environment
from nbsweep.kernel.fork import Template
from nbsweep.kernel.process import Kernel
from nbsweep.kernel.shared_setup import SetupOutcome, SetupWork
from nbsweep.notebook.textfile import read_text
from nbsweep.options import kernel_folder

# Seconds the preload may take (a first `import torch` with CUDA can take a while); past
# that the kernel is used as it is and the notebook imports what is missing itself.
PRELOAD_TIMEOUT = 300.0


@dataclass(frozen=True)
class KernelRecipe:
    """Everything a warm kernel must share with the trial that takes it."""

    kernel_name: str
    cwd: Path
    env: Mapping[str, str] = field(hash=False)
    preload_code: str | None = None
    setup: SetupWork | None = None
    """The notebook's setup cells, run once in the template (None: every trial runs all)."""


class WarmKernel:
    """Starts a kernel (and preloads) in the background; ``take`` hands it over, once."""

    def __init__(
        self,
        recipe: KernelRecipe,
        template: Template | None = None,
        on_fallback: Callable[[str], None] = lambda reason: None,
        on_note: Callable[[str], None] = lambda note: None,
        on_setup: Callable[[SetupOutcome], None] = lambda outcome: None,
    ) -> None:
        """``on_fallback``: the template failed (this kernel is started the usual way);
        ``on_note``: something worth saying once about how kernels start; ``on_setup``:
        what came of the template's setup, once it ran."""
        self.recipe = recipe
        self.kernel = Kernel(recipe.kernel_name, template=template)
        self.on_fallback = on_fallback
        self.on_note = on_note
        self.on_setup = on_setup
        self._warming = asyncio.ensure_future(self._warm())

    async def _warm(self) -> None:
        if self.kernel.template is not None:
            try:
                await self.kernel.start(self.recipe.cwd, self.recipe.env)
            except KernelStartError as error:
                # A template that failed or died: this kernel starts the usual way.
                self.on_fallback(str(error))
                self.kernel = Kernel(self.recipe.kernel_name)
            else:
                template = self.kernel.template
                assert template is not None  # a fallback kernel has none
                if template.setup_outcome is not None:
                    self.on_setup(template.setup_outcome)
                if not template.preload_skipped:
                    await self.kernel.rehearse()  # the template imported the preload already
                    return
                self.on_note(f"forked kernels run the preload each: {template.preload_skipped}")
        if self.kernel.info is None:
            await self.kernel.start(self.recipe.cwd, self.recipe.env)
        if self.recipe.preload_code:
            await self.kernel.execute_silently(self.recipe.preload_code, PRELOAD_TIMEOUT)
        await self.kernel.rehearse()

    async def ready(self) -> bool:
        """Wait until it is warm; False if it could not start (``take`` says why)."""
        await asyncio.wait({self._warming})
        return self._warming.exception() is None

    async def take(self) -> Kernel:
        """The warm kernel, now the caller's to stop. Raises KernelStartError if it failed."""
        await self._warming
        return self.kernel

    async def discard(self) -> None:
        """Stop it, warm or not."""
        self._warming.cancel()
        await asyncio.gather(self._warming, return_exceptions=True)
        await self.kernel.stop(graceful=False)


class EarlyKernel:
    """A kernel launched for the trial this process is about to run, and the event loop it
    belongs to (the trial must run on the same loop). ``close`` stops it if no trial took it."""

    def __init__(self, notebook: Path, kernel_name: str | None, cwd: Path | None) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.kernel: Kernel | None = None
        name = kernel_name or kernelspec_name(notebook)
        if name is None:
            return  # not a notebook nbsweep can read: the trial says so, no kernel wasted
        try:
            kernel = Kernel(name)
            self.kernel = kernel
            folder = kernel_folder(notebook, cwd)
            self.loop.run_until_complete(kernel.launch(folder, trial_environment()))
        except Exception:
            # The trial starts its kernel itself, and reports the problem properly.
            self.close(reopen=True)
        except BaseException:  # Ctrl-C while launching: leave nothing behind
            self.close()
            raise

    def take(self) -> Kernel | None:
        kernel, self.kernel = self.kernel, None
        return kernel

    def close(self, reopen: bool = False) -> None:
        """Stop the kernel if no trial took it, then close the loop (``reopen``: and start
        a fresh one, for a trial that starts its kernel itself)."""
        try:
            kernel = self.take()
            if kernel is not None:
                self.loop.run_until_complete(kernel.stop(graceful=False))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            self.loop.close()
            if reopen:
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)


def kernelspec_name(path: Path) -> str | None:
    """The notebook's kernelspec name ("python3" if it names none), from a quick look at
    the file; None if it is not a notebook nbsweep can read (``read_notebook`` says why)."""
    if path.suffix != ".ipynb":
        return None
    try:
        metadata = json.loads(read_text(path, "notebook")).get("metadata", {})
    except (UsageError, ValueError, AttributeError):
        return None
    spec = metadata.get("kernelspec") if isinstance(metadata, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) and name else "python3"
