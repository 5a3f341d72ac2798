"""``nbsweep run`` is one process per trial, so it cannot warm a kernel ahead of time. The
next best thing: launch the kernel first, so that it boots (~0.3 s, on another core) while
this process imports the rest of nbsweep, reads the values and, under ``wandb agent``, opens
the W&B run. Imports only what launching needs."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from nbsweep.kernel.api import TRIAL_ENV
from nbsweep.kernel.process import Kernel


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
        environ = {**os.environ, TRIAL_ENV: "1"}
        try:
            kernel = Kernel(name)
            self.kernel = kernel
            self.loop.run_until_complete(kernel.launch(cwd or notebook.resolve().parent, environ))
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
        metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return None
    spec = metadata.get("kernelspec") if isinstance(metadata, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) and name else "python3"
