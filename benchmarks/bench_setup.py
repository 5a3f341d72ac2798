"""A sweep of a notebook with a slow setup: nbsweep against one process and against scripts.

Issue 22's case, in one run: a notebook spends ~2 s preparing data (deterministic numpy
work: a seeded 3000x300 matrix through repeated gram/update rounds) before its trial's
values enter, then ~0.25 s training (gradient descent on the prepared data, 32 targets).
Two notebooks, written to a temporary folder:

* ``papermill``: ``import numpy as np``; the preparation; a ``parameters`` cell
  ``lr = 0.01``; the training, ending in ``nbsweep.log({"loss": loss})``;
* ``wandb``: as W&B's tutorials write it: ``import wandb``, ``import numpy as np``, the
  preparation, ``sweep_config = {...}``, ``sweep_id = wandb.sweep(...)``, a
  ``def train(config=None)`` that opens ``wandb.init(config=config)``, reads
  ``wandb.config.lr`` and calls ``wandb.log({"loss": loss})``, then
  ``wandb.agent(sweep_id, train, count=N)``.

Per notebook, N trials (``--trials``, default 20), each route timed as whole processes:

* ``nbsweep (setup once)``: ``nbsweep sweep --local sweep.yaml --store S`` (method random,
  ``run_cap: N``, ``lr`` uniform on 0.01..0.3; untimed), then the timed ``nbsweep agent
  local:ID --store S`` with its defaults (one agent; an offline wandb run per trial);
* ``nbsweep --no-setup-once``: the same with ``--no-setup-once``; skipped, with the reason,
  where ``nbsweep agent --help`` does not offer it;
* ``in-process``: one Python process runs the setup once, then the training N times with
  the first nbsweep row's values of ``lr``, as ``wandb.agent`` in Jupyter does (for the
  ``wandb`` notebook it calls ``train({"lr": ...})``: an offline wandb run per training);
* ``script x N``: N runs of ``python train.py``, the code cells as one script with ``lr``
  injected (for ``wandb``: the cells up to ``def train``, then ``train({"lr": ...})``).

Reported per route: median, min and max wall seconds of ``--repeats`` (default 1), the
median as a multiple of the in-process route's and of the scripts', trials per second, and
peak PSS (a page shared by n processes counts 1/n in each, so forked kernels are not
charged their template's pages again): of the processes running the notebook's code (the
agent's kernels and template, sampled as a sum; the in-process interpreter; the largest
script) and of the whole process tree (with the agent and wandb-core).

Every route is checked: exit 0; N trials, each printing the preparation's checksum (the
same in every route) and a loss; the first nbsweep row's losses equal, value by value, the
in-process route's and the scripts'; N runs finished in the store with the loss in their
summary; N offline wandb runs wherever wandb is on. A failure is listed at the end and the
script exits 1; the other rows still run.

Run it from the repository root, in an environment with nbsweep's ``local`` extra::

    python benchmarks/bench_setup.py
    python benchmarks/bench_setup.py --repeats 3 --json benchmarks/results/setup.json
    python benchmarks/bench_setup.py --quick

``--quick`` (the smoke run of ``tests/test_benchmarks.py``): 2 trials, tiny data, no
warm-up. Everything runs in a temporary folder, deleted at the end (``--keep`` keeps it),
with its own ``HOME``, ``WANDB_DIR`` per route, wandb offline and none of the caller's
``WANDB_*`` settings (``common.isolated_env``): no account, no network. Every process it
starts carries ``NBSWEEP_BENCH_MARKER=<random>`` in its environment; at the end nothing
with it may be alive (what is, is named, killed, and fails the run). The defaults took 6
minutes on 2 CPUs at a load average of ~2.5, with no ``--no-setup-once`` row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from common import (
    Cell,
    aligned,
    console_script,
    isolated_env,
    kill_tree,
    machine,
    versions,
    write_json,
    write_notebook,
)
from overhead import (
    CREATED,
    Failed,
    agent_offers,
    notebook_stdout,
    run_process,
    tail,
    warm_up_imports,
)

from nbsweep.local.store import RunRecord, RunState, Store

VERSIONS = ("nbsweep", "ipykernel", "jupyter_client", "wandb", "numpy")
MARKER_ENV = "NBSWEEP_BENCH_MARKER"
TOOL_TIMEOUT = 300.0
MB = 1024 * 1024
LR_RANGE = (0.01, 0.3)
CHECKSUM = re.compile(r"^prepared checksum (\S+)$", re.MULTILINE)
LOSS = re.compile(r"^lr (\S+) loss (\S+)$", re.MULTILINE)
TIMES = re.compile(r"^in-process setup s: (\S+) trials s: (\S+)$", re.MULTILINE)
SETUP_ONCE_OPTION = "--no-setup-once"

# --------------------------------------------------------------------------- the notebooks


@dataclass(frozen=True)
class Size:
    """How much work the notebooks do: the data's shape, preparation rounds, training steps."""

    rows: int
    columns: int
    rounds: int
    steps: int


FULL = Size(rows=3000, columns=300, rounds=150, steps=60)
"""On the 2-core VM: ~2 s of preparation with 2 BLAS threads (~3 s with 1), ~0.25 s of
training with 1 or 2 (matrix-matrix products, which a second thread neither helps nor
slows much)."""
TINY = Size(rows=300, columns=30, rounds=2, steps=5)


def preparation(size: Size) -> str:
    return f"""\
rng = np.random.default_rng(0)
X = rng.standard_normal(({size.rows}, {size.columns}))
Y = X @ rng.standard_normal(({size.columns}, 32)) + 0.1 * rng.standard_normal(({size.rows}, 32))
for _ in range({size.rounds}):
    G = X.T @ X
    X = X + 1e-9 * (X @ (G / len(X)))
X = X / np.linalg.norm(X, axis=0)
print(f"prepared checksum {{float(X.sum()):.9g}}")"""


def training(size: Size, lr: str, indent: str = "") -> str:
    """Gradient descent on the prepared data with learning rate ``lr`` (an expression)."""
    lines = f"""\
W = np.zeros((X.shape[1], Y.shape[1]))
for _ in range({size.steps}):
    W -= {lr} * 2 * X.T @ (X @ W - Y) / len(Y)
loss = float(((X @ W - Y) ** 2).mean())
print(f"lr {{{lr}!r}} loss {{loss:.12g}}")"""
    return "\n".join(indent + line for line in lines.splitlines())


SWEEP_CONFIG = f"""\
sweep_config = {{
    "method": "random",
    "metric": {{"name": "loss", "goal": "minimize"}},
    "parameters": {{
        "lr": {{"distribution": "uniform", "min": {LR_RANGE[0]}, "max": {LR_RANGE[1]}}},
    }},
}}"""


@dataclass(frozen=True)
class Style:
    """One notebook, and the same code for one process and for a script."""

    name: str
    notebook: tuple[Cell, ...]
    setup: str
    """The code before the trial's values: what the in-process route runs once."""
    trial: str
    """What the in-process route runs per trial, with ``lr`` set in its namespace."""
    wandb_runs: bool
    """The in-process route and the scripts open an offline wandb run per trial."""

    def script(self, lr: float) -> str:
        """The same code as one script, the trial's ``lr`` injected."""
        return f"{self.setup}\n\nlr = {lr!r}\n\n{self.trial}\n"


def papermill_style(size: Size) -> Style:
    setup = ("import numpy as np", preparation(size))
    train = f'import nbsweep\n\n{training(size, "lr")}\nnbsweep.log({{"loss": loss}})'
    return Style(
        "papermill",
        notebook=(*setup, ("lr = 0.01", ["parameters"]), train),
        setup="\n\n".join(setup),
        trial=train,
        wandb_runs=False,
    )


def wandb_style(size: Size, trials: int) -> Style:
    define = (
        "def train(config=None):\n"
        "    with wandb.init(config=config):\n"
        "        config = wandb.config\n"
        f"{training(size, 'config.lr', indent='        ')}\n"
        '        wandb.log({"loss": loss})'
    )
    setup = ("import wandb", "import numpy as np", preparation(size))
    return Style(
        "wandb",
        notebook=(
            *setup,
            SWEEP_CONFIG,
            'sweep_id = wandb.sweep(sweep_config, project="bench")',
            define,
            f"wandb.agent(sweep_id, train, count={trials})",
        ),
        setup="\n\n".join((*setup, define)),
        trial='train({"lr": lr})',
        wandb_runs=True,
    )


def sweep_yaml(trials: int) -> str:
    low, high = LR_RANGE
    return (
        "program: nb.ipynb\n"
        "method: random\n"
        "metric:\n  name: loss\n  goal: minimize\n"
        f"run_cap: {trials}\n"
        f"parameters:\n  lr:\n    distribution: uniform\n    min: {low}\n    max: {high}\n"
    )


# Runs the setup once, then the trial code once per lr, in this one process.
IN_PROCESS_RUNNER = """\
import json
import sys
import time

with open(sys.argv[1], encoding="utf-8") as spec_file:
    spec = json.load(spec_file)
started = time.perf_counter()
namespace = {"__name__": "__main__"}
exec(compile(spec["setup"], "setup", "exec"), namespace)
set_up = time.perf_counter()
trial = compile(spec["trial"], "trial", "exec")
for lr in spec["lrs"]:
    namespace["lr"] = lr
    exec(trial, namespace)
done = time.perf_counter()
print(f"in-process setup s: {set_up - started:.6f} trials s: {done - set_up:.6f}", file=sys.stderr)
"""


# --------------------------------------------------------------------------- memory


@dataclass
class PeakPss:
    """Peak PSS in bytes over one process tree's samples."""

    code: int = 0
    """The largest sum at one sample over the processes running the notebook's code."""
    tree: int = 0
    """The largest sum at one sample over the whole tree."""
    processes: int = 0
    """How many processes the sampler saw in the tree."""


class PssSampler(threading.Thread):
    """Samples the PSS of a process tree every ``interval`` seconds until stopped (PSS reads
    smaps, and the tree is re-read each time: a full process-table scan). With
    ``root_runs_code`` the root itself runs the code (one process, a script); otherwise
    everything under the root but wandb-core does (an agent's template and kernels)."""

    def __init__(self, pid: int, root_runs_code: bool, interval: float = 0.1) -> None:
        super().__init__(name="pss-sampler", daemon=True)
        self.pid = pid
        self.root_runs_code = root_runs_code
        self.interval = interval
        self.peak = PeakPss()
        self._seen: set[int] = set()
        self._done = threading.Event()

    def stop(self) -> PeakPss:
        self._done.set()
        self.join()
        self.peak.processes = len(self._seen)
        return self.peak

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            self._sample(root)
            self._done.wait(self.interval)

    def _sample(self, root: psutil.Process) -> None:
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        code = tree = 0
        for process in processes:
            try:
                pss = process.memory_full_info().pss
                is_wandb_core = "wandb-core" in process.name()
            except psutil.Error:
                continue
            self._seen.add(process.pid)
            tree += pss
            if process.pid == root.pid:
                code += pss if self.root_runs_code else 0
            elif not self.root_runs_code and not is_wandb_core:
                code += pss
        self.peak.code = max(self.peak.code, code)
        self.peak.tree = max(self.peak.tree, tree)


def run_sampled(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    root_runs_code: bool,
    timeout: float,
) -> tuple[float, PeakPss, str]:
    """Run ``command`` to its end, output into ``log``, sampling its tree's PSS: its wall
    time, peaks and output. A non-zero exit or a timeout (its tree killed) fails."""
    with log.open("w", encoding="utf-8") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        sampler = PssSampler(process.pid, root_runs_code)
        sampler.start()
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(process)
            code = None
        elapsed = time.perf_counter() - started
        peak = sampler.stop()
    text = log.read_text(encoding="utf-8", errors="replace")
    if code != 0:
        why = f"still running after {timeout:.0f} s, killed" if code is None else f"exit {code}"
        raise Failed(f"{why}: {' '.join(command)}\n{tail(text, 20)}")
    return elapsed, peak, text


# --------------------------------------------------------------------------- routes


@dataclass
class Route:
    style: str
    name: str
    times: list[float] = field(default_factory=list)
    peaks: list[PeakPss] = field(default_factory=list)
    skipped: str | None = None
    failed: str | None = None

    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def peak(self, part: str) -> int | None:
        return max(getattr(peak, part) for peak in self.peaks) if self.peaks else None


@dataclass(frozen=True)
class Trials:
    """What a route's N trials printed: the preparation's checksum(s), each lr's loss."""

    checksums: list[str]
    losses: dict[float, float]


def printed_trials(text: str) -> Trials:
    return Trials(
        CHECKSUM.findall(text),
        {float(lr): float(loss) for lr, loss in LOSS.findall(text)},
    )


def check_trials(found: Trials, lrs: list[float], checksum: str | None, setup_runs: int) -> None:
    """``found`` has one loss per lr and the preparation's checksum ``setup_runs`` times,
    each equal to ``checksum`` where one is known."""
    if len(found.checksums) != setup_runs:
        raise Failed(f"printed {len(found.checksums)} checksums, expected {setup_runs}")
    wrong = {value for value in found.checksums if checksum is not None and value != checksum}
    if wrong:
        raise Failed(f"preparation checksum {sorted(wrong)}, expected {checksum}")
    missing = [lr for lr in lrs if lr not in found.losses]
    if missing or len(found.losses) != len(lrs):
        raise Failed(f"{len(found.losses)} losses printed for {len(lrs)} lrs (missing {missing})")


def check_losses(found: dict[float, float], reference: dict[float, float]) -> None:
    """The same loss for the same lr (to BLAS's summation order: 1 or more threads)."""
    differ = [
        f"lr={lr!r}: {loss!r} against {reference[lr]!r}"
        for lr, loss in found.items()
        if lr in reference and not math.isclose(loss, reference[lr], rel_tol=1e-6)
    ]
    if differ:
        raise Failed(f"{len(differ)} losses differ from the first nbsweep row's: {differ[:3]}")


def check_offline_runs(folder: Path, expected: int) -> None:
    found = len(list((folder / "wandb").glob("offline-run-*")))
    if found != expected:
        raise Failed(f"{found} offline wandb runs, expected {expected}")


def read_sweep_runs(runs: list[RunRecord], folder: Path, trials: int) -> Trials:
    """What the runs' saved notebooks printed, each run finished with its printed loss in
    its summary."""
    if len(runs) != trials:
        raise Failed(f"{len(runs)} runs in the store, expected {trials}")
    printed: list[str] = []
    for run in runs:
        lr, loss = run.values.get("lr"), run.summary.get("loss")
        if run.state is not RunState.finished or run.notebook is None:
            raise Failed(f"run {run.run_id} {run.state.value}, summary {run.summary}")
        if not isinstance(lr, float) or not isinstance(loss, float):
            raise Failed(f"run {run.run_id}: lr {lr!r}, summary loss {loss!r}")
        text = notebook_stdout(folder / run.notebook)
        said = printed_trials(text).losses
        if said.get(lr) is None or not math.isclose(said[lr], loss, rel_tol=1e-9):
            raise Failed(f"run {run.run_id}: summary loss {loss!r}, printed {said}")
        printed.append(text)
    return printed_trials("".join(printed))


@dataclass(frozen=True)
class Bench:
    """What every route of one run shares."""

    work: Path
    env: dict[str, str]
    trials: int
    size: Size


def route_folder(
    bench: Bench, style: Style, route: str, repeat: int
) -> tuple[Path, dict[str, str]]:
    """A fresh folder for one route's run, and its environment (``WANDB_DIR`` in it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", route.lower()).strip("-")
    folder = bench.work / style.name / f"{slug}-{repeat}"
    folder.mkdir(parents=True)
    return folder, {**bench.env, "WANDB_DIR": str(folder)}


NO_WANDB = "--no-wandb"


def run_nbsweep(
    bench: Bench, style: Style, route: Route, options: list[str], repeat: int
) -> tuple[float, PeakPss, Trials]:
    folder, env = route_folder(bench, style, route.name, repeat)
    write_notebook(folder, style.notebook)
    (folder / "sweep.yaml").write_text(sweep_yaml(bench.trials), encoding="utf-8")
    store = folder / "store.db"
    nbsweep = console_script("nbsweep", "nbsweep")
    create = [*nbsweep, "sweep", "--local", "sweep.yaml", "--store", str(store)]
    _, created = run_process(create, folder, env, TOOL_TIMEOUT)
    found = CREATED.search(created.stdout + created.stderr)
    if created.returncode != 0 or found is None:
        output = tail(created.stdout + created.stderr)
        raise Failed(f"exit {created.returncode}, no sweep id: {' '.join(create)}\n{output}")
    command = [*nbsweep, "agent", f"local:{found[1]}", "--store", str(store), *options]
    print(f"{style.name}: {' '.join(command)}", file=sys.stderr, flush=True)
    timeout = TOOL_TIMEOUT + 30 * bench.trials
    log = folder / "agent.log"
    wall, peak, _ = run_sampled(command, folder, env, log, False, timeout)
    with Store.open(store) as opened:
        runs = opened.runs(found[1])
    trials = read_sweep_runs(runs, folder, bench.trials)
    check_offline_runs(folder, 0 if NO_WANDB in options else bench.trials)
    return wall, peak, trials


def run_in_process(
    bench: Bench, style: Style, route: Route, lrs: list[float], repeat: int
) -> tuple[float, PeakPss, Trials]:
    folder, env = route_folder(bench, style, route.name, repeat)
    runner = folder / "in_process.py"
    runner.write_text(IN_PROCESS_RUNNER, encoding="utf-8")
    spec = {"setup": style.setup, "trial": style.trial, "lrs": lrs}
    (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, str(runner), str(folder / "spec.json")]
    log = folder / "in_process.log"
    wall, peak, text = run_sampled(command, folder, env, log, True, TOOL_TIMEOUT)
    check_offline_runs(folder, len(lrs) if style.wandb_runs else 0)
    times = TIMES.search(text)
    if times is not None:
        print(
            f"{style.name} in-process: setup {float(times[1]):.2f} s, "
            f"{len(lrs)} trainings {float(times[2]):.2f} s",
            file=sys.stderr,
            flush=True,
        )
    return wall, peak, printed_trials(text)


def run_scripts(
    bench: Bench, style: Style, route: Route, lrs: list[float], repeat: int
) -> tuple[float, PeakPss, Trials]:
    folder, env = route_folder(bench, style, route.name, repeat)
    scripts = []
    for index, lr in enumerate(lrs):
        script = folder / f"train{index}.py"
        script.write_text(style.script(lr), encoding="utf-8")
        scripts.append(script)
    wall = 0.0
    largest = PeakPss()
    printed = []
    for index, script in enumerate(scripts):
        log = folder / f"train{index}.log"
        command = [sys.executable, str(script)]
        elapsed, peak, text = run_sampled(command, folder, env, log, True, TOOL_TIMEOUT)
        wall += elapsed
        largest = PeakPss(max(largest.code, peak.code), max(largest.tree, peak.tree), index + 1)
        printed.append(text)
    check_offline_runs(folder, len(lrs) if style.wandb_runs else 0)
    return wall, largest, printed_trials("".join(printed))


# --------------------------------------------------------------------------- one style


def bench_style(
    bench: Bench, style: Style, routes: list[Route], repeats: int, problems: list[str]
) -> None:
    """Every route of ``style`` per repeat: the nbsweep rows first (the first gives the
    values of lr and the losses the others must match), then in-process and the scripts."""
    checksum: str | None = None
    for repeat in range(repeats):
        lrs: list[float] | None = None
        reference: dict[float, float] = {}
        for route in routes:
            if route.skipped is not None or route.failed is not None:
                continue
            try:
                if route.name.startswith("nbsweep"):
                    options = [SETUP_ONCE_OPTION] if SETUP_ONCE_OPTION in route.name else []
                    options += [NO_WANDB] if NO_WANDB in route.name else []
                    wall, peak, trials = run_nbsweep(bench, style, route, options, repeat)
                    check_trials(trials, list(trials.losses), checksum, bench.trials)
                    if lrs is None:
                        lrs, reference = sorted(trials.losses), trials.losses
                else:
                    if lrs is None:
                        draw = random.Random(repeat)
                        lrs = sorted(draw.uniform(*LR_RANGE) for _ in range(bench.trials))
                    run = run_in_process if route.name == "in-process" else run_scripts
                    wall, peak, trials = run(bench, style, route, lrs, repeat)
                    setup_runs = 1 if route.name == "in-process" else len(lrs)
                    check_trials(trials, lrs, checksum, setup_runs)
                    check_losses(trials.losses, reference)
            except Failed as error:
                route.failed = str(error).splitlines()[0]
                problems.append(f"{style.name} {route.name}: {error}")
                continue
            checksum = checksum or (trials.checksums[0] if trials.checksums else None)
            route.times.append(wall)
            route.peaks.append(peak)
            print(
                f"{style.name} repeat {repeat + 1}/{repeats}: {route.name} {wall:.2f} s",
                file=sys.stderr,
                flush=True,
            )


def make_routes(
    style: Style, trials: int, no_setup_once: str | None, quick: bool = False
) -> list[Route]:
    if quick and no_setup_once is None:
        no_setup_once = "not in the smoke run (--quick)"
    without = Route(style.name, f"nbsweep {SETUP_ONCE_OPTION}", skipped=no_setup_once)
    # The agent keeps an offline wandb run per trial unless told not to; a notebook that
    # opens its own run (the W&B style) gets no second one. Without wandb it does what the
    # in-process route of the papermill style does (a variant: not in the smoke run).
    own_runs = (
        [] if style.wandb_runs or quick else [Route(style.name, f"nbsweep (setup once) {NO_WANDB}")]
    )
    return [
        Route(style.name, "nbsweep (setup once)"),
        *own_runs,
        without,
        Route(style.name, "in-process"),
        Route(style.name, f"script x {trials}"),
    ]


# --------------------------------------------------------------------------- reporting


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.0f}"


def routes_table(results: dict[str, list[Route]], trials: int) -> str:
    rows: list[tuple[str, ...]] = [
        (
            "notebook",
            "route",
            "wall s",
            "min s",
            "max s",
            "x in-process",
            "x script",
            "trials/s",
            "code PSS MB",
            "tree PSS MB",
        )
    ]
    for style, routes in results.items():
        medians = {route.name: route.median() for route in routes}
        in_process = medians["in-process"]
        script = medians[f"script x {trials}"]
        for route in routes:
            median = route.median()
            if median is None:
                why = "skipped" if route.skipped else "failed"
                rows.append((style, route.name, why, *("-",) * 7))
                continue
            rows.append(
                (
                    style,
                    route.name,
                    seconds(median),
                    seconds(min(route.times)),
                    seconds(max(route.times)),
                    ratio(median, in_process),
                    ratio(median, script),
                    f"{trials / median:.2f}",
                    megabytes(route.peak("code")),
                    megabytes(route.peak("tree")),
                )
            )
    return aligned(rows)


def report(
    args: argparse.Namespace,
    found: dict[str, str],
    results: dict[str, list[Route]],
    problems: list[str],
) -> dict[str, Any]:
    def route_data(route: Route, routes: list[Route]) -> dict[str, Any]:
        medians = {other.name: other.median() for other in routes}
        median = route.median()
        script = medians[f"script x {args.trials}"]
        return {
            "route": route.name,
            "times": [round(value, 4) for value in route.times],
            "median": median,
            "ratio_to_in_process": (
                median / medians["in-process"] if median and medians["in-process"] else None
            ),
            "ratio_to_script": median / script if median and script else None,
            "trials_per_second": args.trials / median if median else None,
            "peak_code_pss_bytes": route.peak("code"),
            "peak_tree_pss_bytes": route.peak("tree"),
            "processes_seen": [peak.processes for peak in route.peaks],
            "skipped": route.skipped,
            "failed": route.failed,
        }

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "executable": sys.executable,
        "versions": found,
        "options": {"quick": args.quick, "repeats": args.repeats, "trials": args.trials},
        "notebooks": {
            style: [route_data(route, routes) for route in routes]
            for style, routes in results.items()
        },
        "problems": problems,
    }


# --------------------------------------------------------------------------- main


def marked_alive(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries this run's marker."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.environ().get(MARKER_ENV) == marker and process.status() != "zombie":
                found.append(process)
    return found


def leftovers(marker: str, timeout: float = 5.0) -> list[str]:
    """What this run started and left alive after ``timeout`` seconds, killed and named."""
    deadline = time.monotonic() + timeout
    while (left := marked_alive(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    named = []
    for process in left:
        with contextlib.suppress(psutil.Error):
            named.append(f"{process.pid}: {' '.join(process.cmdline())}")
            process.kill()
    return named


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews the times."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A sweep of a notebook with ~2 s of setup before its parameters: nbsweep "
        "against the same code in one process and against N plain scripts."
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each route (default 1)")
    parser.add_argument("--trials", type=int, help="trials per route (default 20; --quick 2)")
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: 2 trials, tiny data, no warm-up"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    args.trials = args.trials if args.trials is not None else (2 if args.quick else 20)
    if args.repeats < 1 or args.trials < 1:
        parser.error("--repeats and --trials must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nbsweep-bench-setup-"))
    home = work / "home"
    home.mkdir()
    marker = uuid.uuid4().hex
    env = {**isolated_env(home), MARKER_ENV: marker}
    size = TINY if args.quick else FULL
    bench = Bench(work, env, args.trials, size)
    problems: list[str] = []
    results: dict[str, list[Route]] = {}
    try:
        found = versions(VERSIONS)
        about = machine()
        print(
            f"Python {about['python']}, {about['cpus']} CPUs, {about['platform']}\n"
            + ", ".join(f"{name} {version}" for name, version in found.items())
            + f"\nload average at the start {load_average()}",
            flush=True,
        )
        offered = agent_offers(env, work, SETUP_ONCE_OPTION)
        no_setup_once = None if offered else f"nbsweep agent offers no {SETUP_ONCE_OPTION}"
        if not args.quick:
            try:
                warm_up_imports(env, work, "numpy")
            except Failed as error:
                problems.append(f"warm-up: {error}")
        for style in (papermill_style(size), wandb_style(size, args.trials)):
            routes = make_routes(style, args.trials, no_setup_once, args.quick)
            results[style.name] = routes
            bench_style(bench, style, routes, args.repeats, problems)
        print()
        print(
            f"{args.trials} trials, one agent, whole processes; median of {args.repeats} "
            f"run(s); data {size.rows}x{size.columns}, {size.rounds} preparation rounds, "
            f"{size.steps} training steps.\ncode PSS: the processes running the notebook's "
            "code (the agent's template and kernels; the one process; the largest script), "
            "peak of the sum;\ntree PSS: with the agent and wandb-core"
        )
        print(routes_table(results, args.trials))
        print(f"load average at the end {load_average()}")
        if not offered:
            print(f"nbsweep {SETUP_ONCE_OPTION}: skipped, {no_setup_once}")
            print(
                "nbsweep (setup once): the agent's defaults; this nbsweep has no setup once, "
                "so every trial runs every cell",
                flush=True,
            )
        if args.json is not None:
            write_json(args.json, report(args, found, results, problems))
    finally:
        left = leftovers(marker)
        if left:
            problems.append(f"left alive (killed): {left}")
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"- {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
