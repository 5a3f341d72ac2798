"""Every setting nbsweep takes, as value objects built once at the edge (the CLI's options,
or the Python API's keyword arguments) and passed whole to the layers below.

``ExecutionOptions``: how cells run. ``TrialSettings``: how every trial of one command or
agent runs. ``StoreOptions``: where a local sweep's store is and how agents share it.
``AgentOptions``: how an agent asks for and runs trials. The environment variables nbsweep
reads (``NBSWEEP_*``) are read here and nowhere else: ``StoreOptions.from_environment``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nbsweep.errors import UsageError
from nbsweep.kernel.preload import Preload

if TYPE_CHECKING:
    from nbformat import NotebookNode

DEFAULT_CONFIG_VAR = "config"

KernelStart = Literal["fork", "exec"]
"""fork: kernels are forked from a template process; exec: each is a fresh interpreter."""

STORE_ENV = "NBSWEEP_STORE"
AGENT_NAME_ENV = "NBSWEEP_AGENT_NAME"
HEARTBEAT_TIMEOUT_ENV = "NBSWEEP_HEARTBEAT_TIMEOUT"
BUSY_TIMEOUT_ENV = "NBSWEEP_STORE_BUSY_TIMEOUT"
RECONNECT_TIMEOUT_ENV = "NBSWEEP_STORE_RECONNECT_TIMEOUT"

DEFAULT_STORE = Path(".nbsweep") / "sweeps.db"
DEFAULT_HEARTBEAT_TIMEOUT = 600.0
DEFAULT_BUSY_TIMEOUT = 10.0
DEFAULT_RECONNECT_TIMEOUT = 120.0
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# Heartbeats while a trial runs (how soon a stop reaches it), where --heartbeat is not given.
LOCAL_HEARTBEAT = 1.0
WANDB_HEARTBEAT = 5.0


@dataclass(frozen=True)
class ExecutionOptions:
    """How to run cells. Every field is what the CLI option of the same name sets."""

    cell_timeout: float | None = None
    """Seconds one cell may run before it is interrupted (then killed); None: no limit."""
    trial_timeout: float | None = None
    """Seconds the whole notebook may run; None: no limit."""
    stop_grace: float = 10.0
    """Seconds between the interrupt and the kill when a trial is stopped or times out."""
    stream_limit: int = 1 << 20
    """Characters of a cell's stdout (and of its stderr) kept in the saved notebook; the rest
    goes to ``Hooks.overflow`` (a side file) piece by piece, so a cell that prints 200 MB
    costs nbsweep about one copy of its message."""


@dataclass(frozen=True)
class TrialSettings:
    """How every trial of one command or agent runs: its options, the same for each trial."""

    config_var: str = DEFAULT_CONFIG_VAR
    sweep_function: str | None = None
    """The function of the ``wandb.agent`` call trials run; None: the last call's."""
    allow_unknown: bool = False
    html: bool = False
    kernel_name: str | None = None
    """None: the notebook's kernelspec (python3 means this interpreter)."""
    cwd: Path | None = None
    """The kernel's working directory; None: the notebook's folder."""
    metric_variables: Sequence[str] = ()
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    run_install_cells: bool = False
    """Run ``!pip install`` and like lines; by default a trial skips them (and says so)."""

    def kernel_for(self, nb: NotebookNode) -> str:
        """``kernel_name``, else the notebook's kernelspec (python3 if it names none)."""
        name = self.kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3")
        return str(name)

    def kernel_cwd(self, notebook: Path) -> Path:
        """The folder the kernel runs in: ``cwd``, else the notebook's folder."""
        return kernel_folder(notebook, self.cwd)


def kernel_folder(notebook: Path, cwd: Path | None) -> Path:
    """The folder a notebook's kernel runs in: ``cwd`` (``--cwd``), else the notebook's."""
    return (cwd or notebook.resolve().parent).resolve()


def is_url(location: str | Path) -> bool:
    """Whether a store's location is a PostgreSQL URL (else it is an SQLite file)."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def store_location(text: str | os.PathLike[str]) -> Path | str:
    """A store given as text or a path: a ``postgresql://`` URL stays text, else a path."""
    location = os.fspath(text)
    return location if is_url(location) else Path(location)


@dataclass(frozen=True)
class StoreOptions:
    """Where a local sweep's store is and how the agents sharing it behave."""

    location: Path | str = field(default=DEFAULT_STORE, repr=False)
    """An SQLite file, or a ``postgresql://`` URL (text; it may hold a password, so the
    options' repr leaves it out)."""
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    """Seconds without a heartbeat before a running run is lost (crashed, or requeued)."""
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    """Seconds a statement waits for another process's write lock."""
    reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT
    """Seconds a lost database server is waited for."""
    agent_name: str = field(default_factory=socket.gethostname)
    """The name this machine's agents go by in the store (default: the host name)."""
    requeue_crashed: bool = False
    """Put a dead agent's run back to pending instead of marking it crashed."""

    @classmethod
    def from_environment(
        cls,
        store: str | os.PathLike[str] | None = None,
        *,
        heartbeat_timeout: float | None = None,
        agent_name: str | None = None,
        requeue_crashed: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> StoreOptions:
        """What is given, else the ``NBSWEEP_*`` variables, else the defaults.
        UsageError for a variable that is not a number of seconds above 0."""
        env = os.environ if environ is None else environ
        chosen = store if store is not None else env.get(STORE_ENV) or DEFAULT_STORE
        return cls(
            location=store_location(chosen),
            heartbeat_timeout=heartbeat_timeout
            if heartbeat_timeout is not None
            else _seconds(env, HEARTBEAT_TIMEOUT_ENV, DEFAULT_HEARTBEAT_TIMEOUT),
            busy_timeout=_seconds(env, BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT),
            reconnect_timeout=_seconds(env, RECONNECT_TIMEOUT_ENV, DEFAULT_RECONNECT_TIMEOUT),
            agent_name=agent_name or env.get(AGENT_NAME_ENV) or socket.gethostname(),
            requeue_crashed=requeue_crashed,
        )


@dataclass(frozen=True)
class AgentOptions:
    """How an agent behaves; every field is the CLI option of the same name."""

    count: int | None = None
    """Stop after this many trials; None: until the server says exit."""
    notebook: Path | None = None
    """The notebook to run; None: the sweep's ``program:``."""
    project: str | None = None
    """W&B project of the sweep; None: from the sweep's ID, or WANDB_PROJECT."""
    entity: str | None = None
    """W&B entity of the sweep; None: from the sweep's ID, or WANDB_ENTITY."""
    poll: float = 2.0
    """Seconds between heartbeats while idle (a trial is asked for as soon as one ends)."""
    heartbeat: float | None = None
    """Seconds between heartbeats while a trial runs (how fast a stop arrives); None: 1 for
    local sweeps, 5 for W&B (``heartbeat_for``)."""
    max_consecutive_failures: int = 3
    trial: TrialSettings = field(default_factory=TrialSettings)
    """How every trial runs (execution options, kernel, config variable)."""
    wandb_dir: Path = field(default_factory=Path.cwd)
    report_to_wandb: bool = True
    """Open a W&B run for notebooks that do not open their own."""
    warm_kernels: bool = True
    """Start each trial's kernel while the previous trial runs."""
    preload: Preload = field(default_factory=Preload)
    """What a warm kernel imports before its trial."""
    kernel_start: KernelStart = "fork"
    """fork: warm kernels are forked from a template process (where that can serve);
    exec: each is a fresh interpreter."""
    setup_once: bool = True
    """Run the notebook's setup cells once per agent in the kernel template and fork each
    trial's kernel from there (where that is safe; else every trial runs every cell)."""
    log_output: bool = False
    """Stream each trial's kernel output while it runs."""

    def heartbeat_for(self, local: bool) -> float:
        """``heartbeat``, else the default for the sweep's server."""
        if self.heartbeat is not None:
            return self.heartbeat
        return LOCAL_HEARTBEAT if local else WANDB_HEARTBEAT


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:  # also refuses nan
        raise UsageError(f"{name}={text!r} is not a number of seconds above 0")
    return value


@dataclass(frozen=True)
class DashboardOptions:
    """What ``nbsweep dashboard`` serves, and where."""

    store: StoreOptions
    notebooks: Path = Path(".")
    """The folder the runs' notebooks are served from (relative paths in the store are the
    agents'; a notebook outside this folder is not served)."""
    host: str = "127.0.0.1"
    port: int = 0
    """0: any free port."""
    refresh: float = 0.5
    """Seconds between two reads of one sweep from the store, however many pages ask."""
    sweep_id: str | None = None
    """The sweep the printed URL opens; None: the list of sweeps."""
