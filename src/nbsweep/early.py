"""``nbsweep run`` is one process per trial, so it cannot warm a kernel ahead of time. The
next best thing: launch the kernel first, so that it boots (~0.3 s, on another core) while
this process imports the rest of nbsweep, reads the values and, under ``wandb agent``, opens
the W&B run. Imports only what launching needs."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from nbsweep.errors import NbsweepError
from nbsweep.kernel import Kernel
from nbsweep.kernel_api import TRIAL_ENV


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
        kernel = Kernel(name)
        environ = {**os.environ, TRIAL_ENV: "1"}
        try:
            self.loop.run_until_complete(kernel.launch(cwd or notebook.resolve().parent, environ))
        except (NbsweepError, OSError):
            # The trial starts its kernel itself, and reports the problem properly.
            self.loop.run_until_complete(kernel.stop(graceful=False))
            return
        self.kernel = kernel

    def take(self) -> Kernel | None:
        kernel, self.kernel = self.kernel, None
        return kernel

    def close(self) -> None:
        try:
            if self.kernel is not None:
                self.loop.run_until_complete(self.take().stop(graceful=False))  # type: ignore[union-attr]
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            self.loop.close()


def kernelspec_name(path: Path) -> str | None:
    """The notebook's kernelspec name ("python3" if it names none), from a quick look at
    the file; None if it is not a notebook nbsweep can read (``read_notebook`` says why)."""
    if path.suffix != ".ipynb":
        return None
    try:
        metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return None
    spec = metadata.get("kernelspec") if isinstance(metadata, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) and name else "python3"
