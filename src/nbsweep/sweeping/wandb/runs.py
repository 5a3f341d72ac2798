"""A trial as a W&B run: the files ``wandb agent`` would give it, and the run nbsweep opens
and reports to when the notebook does not open one itself. The only module that calls the
wandb SDK (imported lazily: it costs a third of a second)."""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from nbformat import NotebookNode

from nbsweep.notebook import files
from nbsweep.notebook.literals import refuse_too_deep
from nbsweep.notebook.wandb_way import calls_wandb_init
from nbsweep.status import TrialStatus
from nbsweep.sweeping.path import SweepPath
from nbsweep.trial.metrics import MetricRecord

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

    from nbsweep.trial.result import TrialResult


def notebook_opens_run(nb: NotebookNode) -> bool:
    """Whether any code cell calls ``wandb.init`` (then the notebook owns its run)."""
    return calls_wandb_init(nb)


def write_param_file(wandb_dir: Path, sweep: str, run_id: str, values: Mapping[str, Any]) -> Path:
    """``wandb/sweep-<id>/config-<run>.yaml`` as ``wandb agent`` writes it."""
    sweep, run_id = files.safe_id(sweep, "sweep id"), files.safe_id(run_id, "run id")
    for name, value in values.items():
        refuse_too_deep(name, value)  # PyYAML writes recursively
    path = wandb_dir / "wandb" / f"sweep-{sweep}" / f"config-{run_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {name: {"value": value} for name, value in values.items()}
    body = yaml.safe_dump(entries, sort_keys=False, default_flow_style=False)
    # Read once, at once, by the trial: a crash loses nothing if it never reaches the disk.
    files.atomic_write_text(path, "wandb_version: 1\n\n" + body, durable=False)
    return path


@functools.cache
def installed_packages() -> str:
    """``requirements.txt`` as wandb saves it in a run: ``name==version`` a line."""
    lines = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    return "".join(f"{line}\n" for line in sorted(lines, key=str.lower))


class TrialRun:
    """The W&B run nbsweep opens for a notebook that never calls ``wandb.init``."""

    def __init__(
        self,
        path: SweepPath,
        run_id: str,
        values: Mapping[str, Any],
        param_file: Path,
        wandb_dir: Path,
        *,
        offline: bool = False,
    ) -> None:
        self.path = path
        self.run_id = run_id
        self.values = dict(values)
        self.offline = offline
        self.param_file = param_file
        self.wandb_dir = wandb_dir
        self._run: Run | None = None

    def start(self) -> None:
        import wandb

        settings = wandb.Settings(
            silent=True,
            console="off",
            x_disable_stats=True,
            # wandb reads every installed package's metadata for each run (most of an
            # offline run's cost); the agent lists them once and gives each run the file.
            x_save_requirements=False,
        )
        if not self.offline:
            # Set only here: an offline run (local sweeps) names no sweep, W&B would have
            # none to sync it to; and a sweep_id set to None would hide WANDB_SWEEP_ID.
            settings.sweep_id = self.path.sweep
        self._run = wandb.init(
            id=self.run_id,
            project=self.path.project,
            entity=None if self.offline else self.path.entity,
            group=f"nbsweep-{self.path.sweep}" if self.offline else None,
            mode="offline" if self.offline else None,
            dir=str(self.wandb_dir),
            # wandb reads WANDB_SWEEP_PARAM_PATH once per process: give the values here.
            config=self.values,
            reinit="create_new",
            settings=settings,
        )
        files.atomic_write_text(
            Path(self._run.dir) / "requirements.txt", installed_packages(), durable=False
        )

    def log(self, record: MetricRecord) -> None:
        if self._run is not None:
            self._run.log(dict(record.values))

    def finish(self, result: TrialResult) -> None:
        """Final metrics, status, the executed notebook as files, and the exit code."""
        if self._run is None:
            return
        self._run.summary.update({**result.metrics.final, "nbsweep/status": str(result.status)})
        for path in (result.output, result.html):
            if path is None or not path.exists():
                continue
            if self.offline:
                # An offline run uploads what is in its files folder when synced.
                shutil.copy2(path, Path(self._run.dir) / path.name)
            else:
                self._run.save(str(path), base_path=str(path.parent), policy="now")
        self._run.finish(exit_code=result.status.wandb_exit_code)
        self._run = None


def start_or_warn(run: TrialRun | None, warn: Callable[[str], None]) -> TrialRun | None:
    """Open the run; if W&B cannot be reached the trial still runs, unreported, and says so."""
    if run is None:
        return None
    try:
        run.start()
    except Exception as error:  # wandb raises many types; none should cost the trial
        warn(f"run {run.run_id}: cannot open the W&B run ({error}); the trial runs unreported")
        return None
    return run


def report_afterwards(
    run: TrialRun,
    records: list[MetricRecord],
    result: TrialResult,
    warn: Callable[[str], None],
) -> None:
    """Open, fill and close an offline run once its trial is over: nobody watches an offline
    run live, and opening one costs the agent tens of milliseconds of CPU mid-trial."""
    if start_or_warn(run, warn) is None:
        return
    for record in records:
        run.log(record)
    run.finish(result)


def finish_reporting(
    run: TrialRun | None,
    path: SweepPath,
    run_id: str,
    result: TrialResult,
    warn: Callable[[str], None],
) -> None:
    """Close nbsweep's run (``run``), or else the run the notebook opened itself: attach the
    executed notebook, and close the run if it died open with the kernel."""
    if run is not None:
        run.finish(result)
        return
    try:
        if result.kernel_lost and result.status is not TrialStatus.FINISHED:
            # The notebook's own run died with its kernel, still open: close it as what it was.
            close_orphaned_run(path, run_id, result)
        else:
            attach_files(path, run_id, result)
    except Exception as error:  # the trial is over; reporting trouble must not fail it
        warn(f"run {run_id}: could not report the trial's end to W&B: {error}")


def close_orphaned_run(path: SweepPath, run_id: str, result: TrialResult) -> None:
    import wandb

    run = wandb.init(
        id=run_id,
        project=path.project,
        entity=path.entity,
        resume="allow",
        reinit="create_new",
        settings=wandb.Settings(
            sweep_id=path.sweep, silent=True, console="off", x_disable_stats=True
        ),
    )
    run.summary.update({"nbsweep/status": str(result.status)})
    for local in (result.output, result.html):
        if local is not None and local.exists():
            run.save(str(local), base_path=str(local.parent), policy="now")
    run.finish(exit_code=result.status.wandb_exit_code)


def attach_files(path: SweepPath, run_id: str, result: TrialResult) -> None:
    """Upload the executed notebook to a run the notebook opened itself (public API)."""
    import wandb

    api = wandb.Api()
    entity = path.entity or api.default_entity
    run = api.run(f"{entity}/{path.project or 'uncategorized'}/{run_id}")
    for local in (result.output, result.html):
        if local is not None and local.exists():
            run.upload_file(str(local), root=str(local.parent))


def attach_to_offline_run(
    run_id: str, result: TrialResult, kernel_dir: Path, warn: Callable[[str], None]
) -> None:
    """Copy the executed notebook (and its HTML) into the files of the offline run the
    notebook opened itself: ``wandb sync`` uploads that folder with the run, as it does for
    the runs nbsweep opens. Nothing is copied where the notebook left no such run."""
    folder = offline_run_folder(run_id, kernel_dir)
    if folder is None:
        return
    try:
        (folder / "files").mkdir(exist_ok=True)
        for local in (result.output, result.html):
            if local is not None and local.exists():
                shutil.copy2(local, folder / "files" / local.name)
    except OSError as error:  # the trial is over; reporting trouble must not fail it
        warn(f"run {run_id}: could not attach the notebook to its offline run: {error}")


def offline_run_folder(run_id: str, kernel_dir: Path) -> Path | None:
    """Where wandb, in a kernel started in ``kernel_dir``, wrote the offline run ``run_id``
    (``$WANDB_DIR`` or the kernel's folder, then ``wandb/`` or ``.wandb/``); the newest if
    there are several (a resumed run), None if there is none."""
    root = kernel_dir / os.environ.get("WANDB_DIR", "")  # an absolute WANDB_DIR wins
    safe = files.safe_id(run_id, "run id")
    for name in ("wandb", ".wandb"):
        # escape: a "*" or "[" in an id (W&B allows them) must match no other run.
        found = sorted((root / name).glob(f"offline-run-*-{glob.escape(safe)}"))
        if found:
            return found[-1]
    return None


def teardown() -> None:
    """Stop wandb's service process, if this process started one."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()
