"""A kernel started before its trial is known, with the notebook's imports preloaded.

The agent starts the next trial's kernel while the current trial runs, so a trial begins on
a kernel that is already up. A kernel is never reused: each trial gets a fresh one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nbsweep.errors import KernelStartError
from nbsweep.kernel.fork import Template
from nbsweep.kernel.process import Kernel

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


class WarmKernel:
    """Starts a kernel (and preloads) in the background; ``take`` hands it over, once."""

    def __init__(
        self,
        recipe: KernelRecipe,
        template: Template | None = None,
        on_fallback: Callable[[str], None] = lambda reason: None,
        on_note: Callable[[str], None] = lambda note: None,
    ) -> None:
        """``on_fallback``: the template failed (this kernel is started the usual way);
        ``on_note``: something worth saying once about how kernels start."""
        self.recipe = recipe
        self.kernel = Kernel(recipe.kernel_name, template=template)
        self.on_fallback = on_fallback
        self.on_note = on_note
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
                if not template.preload_skipped:
                    await self.kernel.rehearse()  # the template imported the preload already
                    return
                self.on_note(
                    f"forked kernels run the preload each: {template.preload_skipped}"
                )
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
