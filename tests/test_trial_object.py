"""The Trial object: what it owns is let go on every path, also before any kernel runs."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import nbformat
import pytest

from nbsweep.trial import run as trial_run
from nbsweep.trial import trial as one_trial
from nbsweep.trial.metrics import MetricsChannel
from nbsweep.trial.reporting import Reporter


class _WarmKernel:
    """Stands for a warm kernel handed to the trial: only its stop is looked at."""

    def __init__(self) -> None:
        self.stopped: list[bool] = []

    async def stop(self, graceful: bool = True) -> None:
        self.stopped.append(graceful)


def test_a_trial_that_cannot_be_made_stops_its_kernel_and_closes_its_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = tmp_path / "x.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    channels: list[MetricsChannel] = []

    class RecordedChannel(MetricsChannel):
        def __init__(self) -> None:
            super().__init__()
            channels.append(self)

    def unwritable(*args: object) -> dict[str, str]:
        raise OSError("no space left on device")

    monkeypatch.setattr(one_trial, "MetricsChannel", RecordedChannel)
    monkeypatch.setattr(one_trial, "_trial_file", unwritable)
    kernel = _WarmKernel()
    spec = trial_run.TrialSpec(notebook, output=tmp_path / "out" / "x.ipynb")
    with pytest.raises(OSError, match="no space"):
        asyncio.run(
            trial_run.run_trial_async(
                spec,
                Reporter(io.StringIO()),
                kernel=kernel,  # type: ignore[arg-type]
                notebook=nb,
            )
        )
    assert kernel.stopped == [False]
    (channel,) = channels
    assert not channel.folder.exists()
