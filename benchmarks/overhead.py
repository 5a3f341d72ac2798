"""What running a notebook per trial costs above the notebook's own work, tool by tool.

One run, the same notebooks for every tool (written to a temporary folder):

* ``trivial``: a ``parameters`` cell ``lr = 0.1`` and a cell
  ``x = sum(i * lr for i in range(1000)); print("x =", x)``;
* ``numpy``: a leading ``import numpy as np`` cell, then the trivial cells and ~50 ms of
  numpy work (element-wise, so no BLAS threads);
* ``torch``: a leading ``import torch`` cell, the trivial cells, 300 SGD steps of a tiny MLP
  on random data (on CUDA where ``torch.cuda.is_available()``) and
  ``nbsweep.log({"lr_seen": lr, "loss": ...})``; skipped, with the reason, where torch cannot
  be imported.

Per notebook, as fresh processes, interleaved round-robin (one of each per repeat, the
starting one rotating) after one untimed warm-up run of each (``--repeats``, ``--warmup``):

* ``own compute``: the code cells run by ``exec`` in a fresh Python process, timed from the
  first cell to the last (cold imports included, interpreter start-up not): the work itself;
* ``script``: ``python t.py``, the code cells as one script with ``lr = 0.2`` after the
  parameters cell: the floor for a fresh process;
* ``nbconvert``: ``jupyter nbconvert --to notebook --execute --output OUT nb.ipynb`` (the
  defaults: nbconvert cannot set parameters);
* ``papermill``: ``papermill nb.ipynb out.ipynb -p lr 0.2`` (skipped, with the reason, where
  papermill is not installed);
* ``nbsweep run``: ``nbsweep run nb.ipynb --lr=0.2 -o OUT``.

Reported: median, min and max seconds, each median as a multiple of the script's and of
nbconvert's. Every run is checked: exit 0, and the ``x = ...`` line it printed (in its
output notebook, for the notebook runners) is the one for the ``lr`` it was given.

Then per notebook a local sweep of N trials (``--trials``, default 20): ``nbsweep sweep
--local sweep.yaml --store S`` (method random, ``run_cap: N``, ``lr`` uniform on 0.01..0.3;
untimed), then the timed ``nbsweep agent local:ID --store S`` with the agent's defaults (one
worker, warm kernels, its preloading), as rows:

* ``agent``: every trial also an offline wandb run;
* ``agent --no-wandb``: no wandb run;
* ``agent --preload none``: only where ``nbsweep agent --help`` offers ``--preload``;
* ``agent --kernel-start exec``: each kernel a fresh interpreter, not forked from a template
  (only where the agent offers ``--kernel-start``; fork is its default).

From the store (``Store.open(S).runs(ID)``: ``started_at`` is the hand-out, ``finished_at``
the result recorded) the mean and p95 trial; the median gap from one result to the next
hand-out (where a warm agent readies the next kernel, so that a trial alone is not the whole
cost per trial); the agent's wall time / N (throughput); the mean as a multiple of the
script's and nbconvert's medians; the mean minus the notebook's own compute (the overhead
above the work; negative where preloading takes the imports out of the trial); and the
agent's start to the first hand-out and its last result to its exit. The runs are checked:
N of them, all finished, each executed notebook printing the ``x`` for its ``lr``, each
``lr_seen`` in the summary equal to it where the notebook logs, N offline wandb runs where
wandb is on (none with ``--no-wandb``).

During each timed agent a thread samples the agent's process tree with psutil: memory every
10 ms, the tree re-read every 50 ms (a full process-table scan costs ~2 ms, too much every
10 ms on 2 CPUs). Reported: peak RSS of the agent process, of its kernels (processes whose
command line holds ``ipykernel_launcher``; the largest sum at one sample and the largest
single kernel) and of ``wandb-core`` where there is one, and how many kernels it saw.

Run it from the repository root, in an environment with nbsweep's ``local`` extra (and
papermill, torch for those rows; the tools are the console scripts next to
``sys.executable``)::

    pip install -e '.[local,bench]'
    python benchmarks/overhead.py
    python benchmarks/overhead.py --repeats 10 --trials 30 --json benchmarks/results/overhead.json
    python benchmarks/overhead.py --quick

``--quick`` (a CI smoke run, ~30 s on 2 CPUs): the trivial notebook, 1 repeat, no warm-up,
3 trials, the ``agent`` row only. It exits 1 if anything failed (a tool's exit status, a
check above), after printing what it has.

Everything runs in a temporary folder, deleted at the end (``--keep`` keeps it), with its own
``HOME`` and none of the caller's ``WANDB_*`` settings (``common.isolated_env``): no account,
no network. About 8 minutes for the defaults on 2 CPUs with torch installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import psutil
from common import (
    Cell,
    aligned,
    console_script,
    isolated_env,
    kill_tree,
    machine,
    percentile,
    versions,
    write_json,
    write_notebook,
)

from nbsweep.kernel.fork import TEMPLATE_NAME
from nbsweep.local.store import RunRecord, RunState, Store

VERSIONS = (
    "nbsweep",
    "nbconvert",
    "papermill",
    "nbclient",
    "ipykernel",
    "jupyter_client",
    "wandb",
    "numpy",
    "torch",
)
DEFAULT_LR = 0.1
TRIAL_LR = 0.2
TOOL_TIMEOUT = 300.0
MB = 1024 * 1024
CREATED = re.compile(r"created local sweep (\S+)")
PRINTED_X = re.compile(r"^x = (\S+)$", re.MULTILINE)
OWN_COMPUTE = re.compile(r"^own compute s: (\S+)$", re.MULTILINE)

# --------------------------------------------------------------------------- the notebooks

PARAMETERS: Cell = (f"lr = {DEFAULT_LR}", ["parameters"])
TINY_LOOP = 'x = sum(i * lr for i in range(1000))\nprint("x =", x)'
NUMPY_WORK = """\
rng = np.random.default_rng(0)
a = rng.standard_normal(200_000)
for _ in range(10):
    a = np.sin(a) + 0.5 * np.cos(a)
print("checksum =", float(a.sum()))"""
TORCH_WORK = """\
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
inputs = torch.randn(256, 16, device=device)
targets = inputs[:, :1] * 2.0 - inputs[:, 1:2]
model = torch.nn.Sequential(
    torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=lr)
for step in range(300):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
print("device =", device, "loss =", loss.item())"""
TORCH_LOG = 'import nbsweep\nnbsweep.log({"lr_seen": lr, "loss": loss.item()})'

# Runs a script's code in a fresh process, timing the code alone (its imports included).
OWN_COMPUTE_RUNNER = """\
import sys
import time

path = sys.argv[1]
with open(path, encoding="utf-8") as source:
    code = compile(source.read(), path, "exec")
started = time.perf_counter()
exec(code, {"__name__": "__main__"})
print(f"own compute s: {time.perf_counter() - started:.6f}", file=sys.stderr)
"""


@dataclass(frozen=True)
class Subject:
    """A notebook to time."""

    name: str
    cells: tuple[Cell, ...]
    torch: bool = False
    """It imports torch: skipped, with the reason, where torch cannot be imported."""
    logs: bool = False
    """It calls ``nbsweep.log({"lr_seen": lr, ...})``: sweep summaries are checked."""


SUBJECTS = {
    subject.name: subject
    for subject in (
        Subject("trivial", (PARAMETERS, TINY_LOOP)),
        Subject("numpy", ("import numpy as np", PARAMETERS, TINY_LOOP, NUMPY_WORK)),
        Subject(
            "torch",
            ("import torch", PARAMETERS, TINY_LOOP, TORCH_WORK, TORCH_LOG),
            torch=True,
            logs=True,
        ),
    )
}


def script_source(cells: tuple[Cell, ...], lr: float) -> str:
    """The code cells as one script, ``lr = <lr>`` after the parameters cell (as papermill
    and nbsweep inject it)."""
    chunks: list[str] = []
    for cell in cells:
        source, tags = (cell, ()) if isinstance(cell, str) else cell
        chunks.append(source)
        if "parameters" in tags:
            chunks.append(f"lr = {lr!r}")
    return "\n\n".join(chunks) + "\n"


def expected_x(lr: float) -> float:
    return sum(i * lr for i in range(1000))


class Failed(Exception):
    """A run that exited non-zero or did not do what it should. The benchmark goes on
    without that tool or sweep and exits 1 at the end."""


def check_printed(text: str, lr: float) -> None:
    """``text`` has the ``x = ...`` line of a run with ``lr``."""
    found = PRINTED_X.findall(text)
    if not found:
        raise Failed(f"printed no 'x = ...' line (expected one for lr={lr!r})")
    if not math.isclose(float(found[-1]), expected_x(lr), rel_tol=1e-9):
        raise Failed(f"printed x = {found[-1]}, expected {expected_x(lr)!r} for lr={lr!r}")


def notebook_stdout(path: Path) -> str:
    """What the code cells of an executed notebook printed to stdout."""
    if not path.is_file():
        raise Failed(f"left no {path}")
    nb = nbformat.read(path, as_version=4)
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- whole processes


@dataclass
class Tool:
    name: str
    command: list[str]
    lr: float
    """The value the run must print its ``x`` for."""
    output: Path | None = None
    """The executed notebook it must leave (None: check its stdout)."""
    inner: bool = False
    """Its time is the one the process prints (own compute), not the process's wall time."""
    times: list[float] = field(default_factory=list)
    skipped: str | None = None
    failed: str | None = None

    def stat(self, name: str) -> float | None:
        if not self.times:
            return None
        return {"median": statistics.median, "min": min, "max": max}[name](self.times)


def run_process(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``command`` to its end; its wall time and output. A timeout kills its tree."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        process.communicate()
        raise Failed(f"still running after {timeout:.0f} s, killed") from None
    elapsed = time.perf_counter() - started
    return elapsed, subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_tool(tool: Tool, cwd: Path, env: dict[str, str]) -> float:
    """One checked run of ``tool``: its time."""
    if tool.output is not None:
        tool.output.unlink(missing_ok=True)
    elapsed, completed = run_process(tool.command, cwd, env, TOOL_TIMEOUT)
    if completed.returncode != 0:
        output = tail(completed.stdout + completed.stderr)
        raise Failed(f"exit {completed.returncode}: {' '.join(tool.command)}\n{output}")
    printed = completed.stdout if tool.output is None else notebook_stdout(tool.output)
    check_printed(printed, tool.lr)
    if not tool.inner:
        return elapsed
    found = OWN_COMPUTE.search(completed.stderr)
    if found is None:
        raise Failed(f"no 'own compute s:' line in\n{tail(completed.stderr)}")
    return float(found[1])


def build_tools(subject: Subject, folder: Path) -> list[Tool]:
    """The five whole-process runs of ``subject``'s notebook, written to ``folder``."""
    notebook = write_notebook(folder, subject.cells)
    script = folder / "t.py"
    script.write_text(script_source(subject.cells, TRIAL_LR), encoding="utf-8")
    runner = folder / "own_compute.py"
    runner.write_text(OWN_COMPUTE_RUNNER, encoding="utf-8")
    out = {name: folder / f"out-{name}.ipynb" for name in ("nbconvert", "papermill", "nbsweep")}
    jupyter = console_script("jupyter", "jupyter")
    papermill = Tool(
        "papermill",
        [
            *console_script("papermill", "papermill"),
            *(str(notebook), str(out["papermill"]), "-p", "lr", str(TRIAL_LR)),
        ],
        TRIAL_LR,
        out["papermill"],
    )
    if importlib.util.find_spec("papermill") is None:
        papermill.skipped = "papermill is not installed here (pip install -e '.[bench]')"
    return [
        Tool("own compute", [sys.executable, str(runner), str(script)], TRIAL_LR, inner=True),
        Tool("script", [sys.executable, str(script)], TRIAL_LR),
        Tool(
            "nbconvert",
            [
                *(*jupyter, "nbconvert", "--to", "notebook", "--execute"),
                *("--output", str(out["nbconvert"]), str(notebook)),
            ],
            DEFAULT_LR,
            out["nbconvert"],
        ),
        papermill,
        Tool(
            "nbsweep run",
            [
                *console_script("nbsweep", "nbsweep"),
                *("run", str(notebook), f"--lr={TRIAL_LR}", "-o", str(out["nbsweep"])),
            ],
            TRIAL_LR,
            out["nbsweep"],
        ),
    ]


def time_tools(
    subject: Subject,
    tools: list[Tool],
    repeats: int,
    warmup: int,
    cwd: Path,
    env: dict[str, str],
    problems: list[str],
) -> None:
    """Warm-ups, then ``repeats`` round-robin rounds; a failing tool is dropped and noted."""

    def attempt(tool: Tool) -> float | None:
        try:
            return run_tool(tool, cwd, env)
        except Failed as error:
            tool.failed = str(error).splitlines()[0]
            problems.append(f"{subject.name} {tool.name}: {error}")
            return None

    runnable = [tool for tool in tools if tool.skipped is None]
    for _ in range(warmup):
        for tool in runnable:
            if tool.failed is None:
                attempt(tool)
    for repeat in range(repeats):
        start = repeat % len(runnable)
        for tool in runnable[start:] + runnable[:start]:
            if tool.failed is None and (elapsed := attempt(tool)) is not None:
                tool.times.append(elapsed)
        done = ", ".join(
            f"{tool.name} {ms(tool.times[-1])} ms" for tool in runnable if tool.failed is None
        )
        print(f"{subject.name} repeat {repeat + 1}/{repeats}: {done}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- memory


@dataclass
class Peaks:
    """Peak memory in bytes over the samples of one process tree: resident (RSS) and
    proportional (PSS: a page shared by n processes counts 1/n in each, so forked kernels
    are not charged the template's pages again)."""

    agent: int = 0
    kernels_sum: int = 0
    """The largest RSS sum over the kernels alive at one sample."""
    kernel_max: int = 0
    kernels_pss_sum: int = 0
    """The largest PSS sum over the kernels alive at one PSS sample."""
    template: int | None = None
    template_pss: int | None = None
    wandb_core: int | None = None
    kernels_seen: int = 0
    samples: int = 0


class TreeSampler(threading.Thread):
    """Samples a process tree's memory until stopped: the root, its kernel template (by its
    process name), its ipykernel kernels (``ipykernel_launcher`` in the command line, or the
    template's children) and wandb-core. RSS every ``interval`` seconds, PSS every ``pss``
    seconds (it reads smaps); the tree is re-read every ``rescan`` seconds (a full
    process-table scan costs ~2 ms: every 10 ms it would take a fifth of a CPU from what is
    being measured)."""

    def __init__(
        self, pid: int, interval: float = 0.01, rescan: float = 0.05, pss: float = 0.1
    ) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.rescan = rescan
        self.pss = pss
        self.peaks = Peaks()
        self._done = threading.Event()
        self._watched: dict[int, tuple[psutil.Process, str]] = {}
        self._kernels: set[int] = set()

    def stop(self) -> Peaks:
        self._done.set()
        self.join()
        self.peaks.kernels_seen = len(self._kernels)
        return self.peaks

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        self._watched[root.pid] = (root, "agent")
        next_scan = next_pss = 0.0
        while not self._done.is_set():
            now = time.monotonic()
            if now >= next_scan:
                self._scan(root)
                next_scan = now + self.rescan
            self._sample(pss=now >= next_pss)
            if now >= next_pss:
                next_pss = now + self.pss
            self._done.wait(self.interval)

    def _scan(self, root: psutil.Process) -> None:
        try:
            children = root.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            if child.pid in self._watched:
                continue
            try:
                command = " ".join(child.cmdline())
                name = child.name()
                parent = child.ppid()
            except psutil.Error:
                continue
            # Anything else is looked at again next time: between fork and exec a kernel
            # still shows the agent's command line.
            if name == TEMPLATE_NAME:
                self._watched[child.pid] = (child, "template")
            elif self._watched.get(parent, (None, ""))[1] == "template" or (
                "ipykernel_launcher" in command and "nbsweep-forker" not in command
            ):
                self._watched[child.pid] = (child, "kernel")
                self._kernels.add(child.pid)
            elif "wandb-core" in name or "wandb-core" in command:
                self._watched[child.pid] = (child, "wandb-core")

    def _sample(self, pss: bool) -> None:
        kernels: list[int] = []
        kernels_pss: list[int] = []
        for pid, (process, kind) in list(self._watched.items()):
            try:
                rss = process.memory_info().rss
                proportional = process.memory_full_info().pss if pss else 0
            except psutil.Error:
                del self._watched[pid]
                continue
            if kind == "agent":
                self.peaks.agent = max(self.peaks.agent, rss)
            elif kind == "kernel":
                kernels.append(rss)
                kernels_pss.append(proportional)
            elif kind == "template":
                self.peaks.template = max(self.peaks.template or 0, rss)
                self.peaks.template_pss = max(self.peaks.template_pss or 0, proportional)
            elif kind == "wandb-core":
                self.peaks.wandb_core = max(self.peaks.wandb_core or 0, rss)
        self.peaks.kernels_pss_sum = max(self.peaks.kernels_pss_sum, sum(kernels_pss))
        self.peaks.kernels_sum = max(self.peaks.kernels_sum, sum(kernels))
        self.peaks.kernel_max = max([self.peaks.kernel_max, *kernels])
        self.peaks.samples += 1


# --------------------------------------------------------------------------- local sweeps


@dataclass(frozen=True)
class Variant:
    name: str
    options: tuple[str, ...] = ()
    wandb: bool = True


AGENT = Variant("agent")
NO_WANDB = Variant("agent --no-wandb", ("--no-wandb",), wandb=False)
NO_PRELOAD = Variant("agent --preload none", ("--preload", "none"))
EXEC_KERNELS = Variant("agent --kernel-start exec", ("--kernel-start", "exec"))
# Where the torch notebook runs on a GPU: CUDA initialised in the waiting kernel too.
PRELOAD_CUDA = Variant("agent --preload-cuda", ("--preload", "auto", "--preload-cuda"))


def settle_gpu_memory(baseline: list[int], timeout: float = 10.0) -> list[int] | None:
    """GPU memory in use once it is back at ``baseline``, or after ``timeout`` seconds (the
    driver frees a killed process's memory a moment after it is gone)."""
    deadline = time.monotonic() + timeout
    used = gpu_memory_mib()
    while not gpu_memory_back(used, baseline) and time.monotonic() < deadline:
        time.sleep(0.5)
        used = gpu_memory_mib()
    return used


def gpu_memory_back(used: list[int] | None, baseline: list[int]) -> bool:
    """Within 64 MiB of the baseline on every GPU (the driver's own use moves a little)."""
    if used is None or len(used) != len(baseline):
        return False
    return all(abs(u - b) <= 64 for u, b in zip(used, baseline, strict=True))


def gpu_memory_mib() -> list[int] | None:
    """Memory in use on each GPU (``nvidia-smi``), or None where there is none."""
    try:
        completed = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return [int(line) for line in completed.stdout.split() if line.strip().isdigit()]


@dataclass
class SweepRun:
    subject: str
    variant: Variant
    trials: int
    create: float | None = None
    """``nbsweep sweep --local`` (not in ``wall``)."""
    launched: float | None = None
    """When the agent was started (``time.time()``)."""
    wall: float | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)
    """Each run's hand-out and result recorded (``time.time()``), in hand-out order."""
    to_cells: list[float] = field(default_factory=list)
    """Each run's hand-out to its first cell's execute_input, as the saved notebook has it."""
    peaks: Peaks | None = None
    failed: str | None = None

    @property
    def trial_times(self) -> list[float]:
        return [finished - started for started, finished in self.spans]

    @property
    def gaps(self) -> list[float]:
        """One run's result recorded to the next hand-out: the agent's own time between
        trials (one agent process), where a warm agent readies the next kernel."""
        return [after[0] - before[1] for before, after in itertools.pairwise(self.spans)]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.trial_times) if self.spans else None

    @property
    def to_first(self) -> float | None:
        """Agent started to the first hand-out."""
        if self.launched is None or not self.spans:
            return None
        return self.spans[0][0] - self.launched

    @property
    def after_last(self) -> float | None:
        """The last result recorded to the agent's exit."""
        if self.launched is None or self.wall is None or not self.spans:
            return None
        return self.launched + self.wall - self.spans[-1][1]


def sweep_yaml(trials: int) -> str:
    return (
        "program: nb.ipynb\n"
        "method: random\n"
        f"run_cap: {trials}\n"
        "parameters:\n  lr:\n    distribution: uniform\n    min: 0.01\n    max: 0.3\n"
    )


def run_agent(
    command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float
) -> tuple[float, Peaks]:
    """Run the agent to its end, its output into ``log``, sampling its tree's memory."""
    with log.open("w", encoding="utf-8") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        sampler = TreeSampler(process.pid)
        sampler.start()
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(process)
            code = None
        elapsed = time.perf_counter() - started
        peaks = sampler.stop()
    if code != 0:
        why = f"still running after {timeout:.0f} s, killed" if code is None else f"exit {code}"
        text = log.read_text(encoding="utf-8", errors="replace")
        raise Failed(f"{why}: {' '.join(command)}\n{tail(text, 20)}")
    return elapsed, peaks


def check_runs(sweep: SweepRun, subject: Subject, runs: list[RunRecord], folder: Path) -> None:
    if len(runs) != sweep.trials:
        raise Failed(f"{len(runs)} runs in the store, expected {sweep.trials}")
    problems = []
    for run in runs:
        lr = run.values.get("lr")
        try:
            if not isinstance(lr, float):
                raise Failed(f"lr {lr!r} is not a float")
            if run.state is not RunState.finished:
                raise Failed(f"{run.state.value}, summary {run.summary}")
            if run.notebook is None:
                raise Failed("no executed notebook recorded")
            check_printed(notebook_stdout(folder / run.notebook), lr)
            seen = run.summary.get("lr_seen")
            if subject.logs and (seen is None or not math.isclose(float(seen), lr)):
                raise Failed(f"summary lr_seen {seen!r}, expected {lr!r}")
        except Failed as error:
            problems.append(f"{run.run_id} (lr={lr!r}): {error}")
    if problems:
        raise Failed(f"{len(problems)} of {len(runs)} runs wrong: " + "; ".join(problems[:3]))
    offline = len(list((folder / "wandb").glob("offline-run-*")))
    expected = sweep.trials if sweep.variant.wandb else 0
    if offline != expected:
        raise Failed(f"{offline} offline wandb runs, expected {expected}")


def run_sweep(subject: Subject, sweep: SweepRun, work: Path, env: dict[str, str]) -> None:
    """Create the sweep, time the agent, read and check its runs into ``sweep``."""
    folder = work / subject.name / re.sub(r"[^a-z0-9]+", "-", sweep.variant.name).strip("-")
    folder.mkdir(parents=True)
    write_notebook(folder, subject.cells)
    (folder / "sweep.yaml").write_text(sweep_yaml(sweep.trials), encoding="utf-8")
    store = folder / "store.db"
    nbsweep = console_script("nbsweep", "nbsweep")
    create = [*nbsweep, "sweep", "--local", "sweep.yaml", "--store", str(store)]
    sweep.create, created = run_process(create, folder, env, TOOL_TIMEOUT)
    found = CREATED.search(created.stdout + created.stderr)
    if created.returncode != 0 or found is None:
        output = tail(created.stdout + created.stderr)
        raise Failed(f"exit {created.returncode}, no sweep id: {' '.join(create)}\n{output}")
    sweep_id = found[1]
    command = [*nbsweep, "agent", f"local:{sweep_id}", "--store", str(store)]
    command += sweep.variant.options
    print(f"{subject.name}: {' '.join(command)}", file=sys.stderr, flush=True)
    timeout = TOOL_TIMEOUT + 30 * sweep.trials
    sweep.launched = time.time()
    sweep.wall, sweep.peaks = run_agent(command, folder, env, folder / "agent.log", timeout)
    with Store.open(store) as opened:
        runs = opened.runs(sweep_id)
    sweep.spans = sorted(
        (run.started_at, run.finished_at)
        for run in runs
        if run.started_at is not None and run.finished_at is not None
    )
    check_runs(sweep, subject, runs, folder)
    sweep.to_cells = [
        first_cell_at(folder / run.notebook) - run.started_at
        for run in runs
        if run.notebook is not None and run.started_at is not None
    ]


def first_cell_at(notebook: Path) -> float:
    """When the first code cell's input reached the kernel (``time.time()``)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        stamp = cell.get("metadata", {}).get("execution", {}).get("iopub.execute_input")
        if stamp:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    raise Failed(f"no cell timing in {notebook}")


# --------------------------------------------------------------------------- reporting


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"


def megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.0f}"


def medians(tools: list[Tool]) -> dict[str, float | None]:
    return {tool.name: tool.stat("median") for tool in tools}


def tools_table(results: dict[str, list[Tool]]) -> str:
    rows = [("notebook", "tool", "median ms", "min ms", "max ms", "x script", "x nbconvert")]
    for subject, tools in results.items():
        base = medians(tools)
        for tool in tools:
            if tool.skipped or not tool.times:
                rows.append((subject, tool.name, "skipped" if tool.skipped else "failed"))
                rows[-1] += ("-",) * 4
                continue
            median = tool.stat("median")
            rows.append(
                (
                    subject,
                    tool.name,
                    ms(median),
                    ms(tool.stat("min")),
                    ms(tool.stat("max")),
                    ratio(median, base["script"]),
                    ratio(median, base["nbconvert"]),
                )
            )
    return aligned(rows)


def sweeps_table(sweeps: list[SweepRun], results: dict[str, list[Tool]]) -> str:
    rows = [
        (
            "notebook",
            "local sweep",
            "trials",
            "mean ms",
            "p95 ms",
            "gap p50 ms",
            "to cell p50 ms",
            "wall/N ms",
            "wall/N x script",
            "x script",
            "x nbconvert",
            "above own ms",
            "1st s",
            "exit s",
        )
    ]
    for sweep in sweeps:
        base = medians(results[sweep.subject])
        mean = sweep.mean
        if sweep.failed is not None:
            rows.append((sweep.subject, sweep.variant.name, str(sweep.trials), "failed"))
            rows[-1] += ("-",) * 10
            continue
        above = None if mean is None or base["own compute"] is None else mean - base["own compute"]
        per_trial = None if sweep.wall is None else sweep.wall / sweep.trials
        rows.append(
            (
                sweep.subject,
                sweep.variant.name,
                str(sweep.trials),
                ms(mean),
                ms(percentile(sweep.trial_times, 0.95)),
                ms(percentile(sweep.gaps, 0.5)),
                ms(percentile(sweep.to_cells, 0.5)),
                ms(per_trial),
                ratio(per_trial, base["script"]),
                ratio(mean, base["script"]),
                ratio(mean, base["nbconvert"]),
                ms(above),
                seconds(sweep.to_first),
                seconds(sweep.after_last),
            )
        )
    return aligned(rows)


def memory_table(sweeps: list[SweepRun]) -> str:
    rows = [
        (
            "notebook",
            "local sweep",
            "agent MB",
            "kernels MB (sum)",
            "kernels PSS MB (sum)",
            "kernel MB (max)",
            "template MB",
            "template PSS MB",
            "kernels seen",
            "wandb-core MB",
        )
    ]
    for sweep in sweeps:
        if sweep.peaks is None:
            continue
        peaks = sweep.peaks
        rows.append(
            (
                sweep.subject,
                sweep.variant.name,
                megabytes(peaks.agent),
                megabytes(peaks.kernels_sum),
                megabytes(peaks.kernels_pss_sum),
                megabytes(peaks.kernel_max),
                megabytes(peaks.template),
                megabytes(peaks.template_pss),
                str(peaks.kernels_seen),
                megabytes(peaks.wandb_core),
            )
        )
    return aligned(rows)


def header(found: dict[str, str], torch_device: str | None) -> str:
    """The machine and the versions, for the top of the output."""
    about = machine()
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    device = f"; torch device {torch_device}" if torch_device else ""
    return (
        f"Python {about['python']} ({sys.executable}), {about['cpus']} CPUs, "
        f"{about['platform']}\n{listed}{device}"
    )


def report(
    args: argparse.Namespace,
    found: dict[str, str],
    results: dict[str, list[Tool]],
    skipped: dict[str, str],
    sweeps: list[SweepRun],
    problems: list[str],
) -> dict[str, Any]:
    def tool_data(tool: Tool, base: dict[str, float | None]) -> dict[str, Any]:
        median = tool.stat("median")
        return {
            "command": tool.command,
            "times": [round(value, 5) for value in tool.times],
            **{name: tool.stat(name) for name in ("median", "min", "max")},
            "ratio_to_script": median / base["script"] if median and base["script"] else None,
            "ratio_to_nbconvert": (
                median / base["nbconvert"] if median and base["nbconvert"] else None
            ),
            "skipped": tool.skipped,
            "failed": tool.failed,
        }

    def sweep_data(sweep: SweepRun) -> dict[str, Any]:
        own = medians(results[sweep.subject])["own compute"]
        mean = sweep.mean
        return {
            "notebook": sweep.subject,
            "variant": sweep.variant.name,
            "options": list(sweep.variant.options),
            "trials": sweep.trials,
            "create": sweep.create,
            "wall": sweep.wall,
            "per_trial_wall": None if sweep.wall is None else sweep.wall / sweep.trials,
            "trial_times": [round(value, 5) for value in sweep.trial_times],
            "gaps": [round(value, 5) for value in sweep.gaps],
            "mean": mean,
            "p95": percentile(sweep.trial_times, 0.95),
            "gap_p50": percentile(sweep.gaps, 0.5),
            "to_first_hand_out": sweep.to_first,
            "after_last_result": sweep.after_last,
            "above_own_compute": None if mean is None or own is None else mean - own,
            "to_first_cell_p50": percentile(sweep.to_cells, 0.5),
            "wall_per_trial": None if sweep.wall is None else sweep.wall / sweep.trials,
            "peak_memory_bytes": None if sweep.peaks is None else asdict(sweep.peaks),
            "failed": sweep.failed,
        }

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "executable": sys.executable,
        "versions": found,
        "options": {
            "quick": args.quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "trials": args.trials,
            "notebooks": args.notebooks,
        },
        "notebooks": {
            subject: {tool.name: tool_data(tool, medians(tools)) for tool in tools}
            for subject, tools in results.items()
        },
        "skipped_notebooks": skipped,
        "sweeps": [sweep_data(sweep) for sweep in sweeps],
        "problems": problems,
    }


# --------------------------------------------------------------------------- main


def probe_torch(env: dict[str, str], cwd: Path) -> tuple[str | None, str | None]:
    """(the device the torch notebook will use, why it cannot run)."""
    if importlib.util.find_spec("torch") is None:
        return None, "torch is not installed here"
    code = "import torch; print('device', 'cuda' if torch.cuda.is_available() else 'cpu')"
    try:
        _, completed = run_process([sys.executable, "-c", code], cwd, env, TOOL_TIMEOUT)
    except Failed as error:
        return None, f"import torch: {error}"
    if completed.returncode != 0:
        last = tail(completed.stderr, 1) or f"exit {completed.returncode}"
        return None, f"import torch failed: {last}"
    return completed.stdout.split()[-1], None


def agent_offers(env: dict[str, str], cwd: Path, option: str) -> bool:
    command = [*console_script("nbsweep", "nbsweep"), "agent", "--help"]
    _, completed = run_process(command, cwd, env, TOOL_TIMEOUT)
    return completed.returncode == 0 and option in completed.stdout


def agent_offers_preload(env: dict[str, str], cwd: Path) -> bool:
    return agent_offers(env, cwd, "--preload")


def warm_up_imports(env: dict[str, str], cwd: Path, *modules: str) -> None:
    """Untimed: wandb, the sweep engine and ``modules`` into the page cache and
    __pycache__."""
    imported = ", ".join(("wandb", "wandb.sdk", *modules))
    code = f"import {imported}, nbsweep.local.engine as engine; engine.load_engine()"
    _, completed = run_process([sys.executable, "-c", code], cwd, env, TOOL_TIMEOUT)
    if completed.returncode != 0:
        raise Failed(f"warm-up imports failed:\n{tail(completed.stderr)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-trial overhead of a plain script, nbconvert, papermill, nbsweep run "
        "and a local nbsweep sweep, on the same notebooks."
    )
    parser.add_argument(
        "--repeats", type=int, help="timed runs per whole-process tool (default 5; --quick 1)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed runs per tool first (default 1; --quick 0)"
    )
    parser.add_argument("--trials", type=int, help="trials per local sweep (default 20; --quick 3)")
    parser.add_argument(
        "--notebooks",
        metavar="NAME,...",
        help=f"which of {','.join(SUBJECTS)} (default all; --quick trivial)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: trivial notebook, 1 repeat, no warm-up, 3 trials, the agent row only",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats if args.repeats is not None else (1 if quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (0 if quick else 1)
    args.trials = args.trials if args.trials is not None else (3 if quick else 20)
    names = args.notebooks or ("trivial" if quick else ",".join(SUBJECTS))
    args.notebooks = [name.strip() for name in names.split(",") if name.strip()]
    unknown = sorted(set(args.notebooks) - set(SUBJECTS))
    if unknown or not args.notebooks:
        parser.error(f"--notebooks takes names from {','.join(SUBJECTS)}, not {unknown}")
    if args.repeats < 1 or args.warmup < 0 or args.trials < 1:
        parser.error("--repeats and --trials must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nbsweep-overhead-"))
    home = work / "home"
    home.mkdir()
    env = isolated_env(home)
    problems: list[str] = []
    results: dict[str, list[Tool]] = {}
    skipped: dict[str, str] = {}
    sweeps: list[SweepRun] = []
    gpu_memory: dict[str, list[int] | None] = {}
    gpu_before: list[int] | None = None
    try:
        torch_device, no_torch = (None, None)
        if "torch" in args.notebooks:
            torch_device, no_torch = probe_torch(env, work)
        found = versions(VERSIONS)
        print(header(found, torch_device), flush=True)
        variants = [AGENT]
        if not args.quick:
            variants.append(NO_WANDB)
            if agent_offers_preload(env, work):
                variants.append(NO_PRELOAD)
            if agent_offers(env, work, "--kernel-start"):
                variants.append(EXEC_KERNELS)
        if args.warmup:
            try:
                warm_up_imports(env, work)
            except Failed as error:
                problems.append(f"warm-up: {error}")
        for name in args.notebooks:
            subject = SUBJECTS[name]
            if subject.torch and no_torch:
                skipped[name] = no_torch
                continue
            folder = work / name
            folder.mkdir()
            tools = build_tools(subject, folder)
            results[name] = tools
            time_tools(subject, tools, args.repeats, args.warmup, folder, env, problems)
            on_gpu = subject.torch and torch_device == "cuda"
            gpu_before = gpu_memory_mib() if on_gpu else None
            for variant in [*variants, *([PRELOAD_CUDA] if on_gpu else [])]:
                sweep = SweepRun(name, variant, args.trials)
                sweeps.append(sweep)
                try:
                    run_sweep(subject, sweep, work, env)
                except Failed as error:
                    sweep.failed = str(error).splitlines()[0]
                    problems.append(f"{name} {variant.name}: {error}")
                if gpu_before is not None:
                    gpu_memory[f"{name} {variant.name}"] = settle_gpu_memory(gpu_before)
                    if not gpu_memory_back(gpu_memory[f"{name} {variant.name}"], gpu_before):
                        problems.append(f"{name} {variant.name}: GPU memory did not return")
        print()
        print(
            f"Whole processes: {args.repeats} timed and {args.warmup} warm-up run(s) each, "
            f"lr={TRIAL_LR} (nbconvert: the default {DEFAULT_LR})"
        )
        print(tools_table(results))
        for name, tools in results.items():
            for tool in tools:
                if tool.skipped:
                    print(f"{name} {tool.name}: skipped, {tool.skipped}")
        for name, why in skipped.items():
            print(f"{name}: skipped, {why}")
        print()
        print(
            f"Local sweeps, {args.trials} trials: mean, p95 from hand-out to result recorded; "
            "gap from a result to the next hand-out;\nwall/N the agent's wall time per trial; "
            "above own = mean - own compute; 1st s: agent start to the first hand-out; "
            "exit s: last result to exit"
        )
        print(sweeps_table(sweeps, results))
        print()
        print("Peak memory of the timed agent's process tree (RSS; PSS where named)")
        print(memory_table(sweeps))
        if gpu_memory:
            print(f"\nGPU memory in use (MiB, nvidia-smi) before the sweeps: {gpu_before}")
            for sweep_name, used in gpu_memory.items():
                print(f"after {sweep_name}: {used}")
        if args.json is not None:
            data = report(args, found, results, skipped, sweeps, problems)
            data["gpu_memory_mib"] = {"before": gpu_before, "after": gpu_memory}
            write_json(args.json, data)
        if problems:
            print(f"\n{len(problems)} problem(s):", file=sys.stderr)
            for problem in problems:
                print(f"- {problem}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
