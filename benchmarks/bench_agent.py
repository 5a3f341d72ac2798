"""Per-trial overhead of the agent loop: from one trial's last cell to the next trial's first.

A sweep agent runs trials back to back; what it costs on top of the notebook's own work is
the gap between them: tearing the trial down, asking the sweep server for the next one and
starting it. This benchmark measures that gap, in one run, for

* ``wandb-nbconvert``: the real ``wandb agent`` CLI with the sweep
  ``command: [jupyter, nbconvert, --to, notebook, --execute, ${program}]`` (the status quo
  and the baseline; it runs the notebook's defaults, nbconvert cannot set parameters);
* ``nbsweep-agent``: ``python -m nbsweep agent ENTITY/PROJECT/SWEEP`` with its default
  ``--poll`` and ``--heartbeat`` (``--poll`` passes another; the poll only matters while
  the server has no work: nbsweep asks for the next trial as soon as one ends);
* ``wandb-nbsweep-run``: the real ``wandb agent`` with ``command: [nbsweep, run, ${program},
  ${args}]``,

on the same sweep definition (only ``command:`` differs, and ``nbsweep agent`` ignores it)
and the same W&B-protocol test server, ``tests/wandb_server.py``, on 127.0.0.1: no network,
no account. Each agent gets N scripted trials (``--trials``, default 4), then ``exit``.

The notebook, written to a temporary folder, has four cells: the first appends
``start <time.time()>`` to the file named by ``$BENCH_LOG`` (set in the agent's environment;
the kernel inherits it under every runner), then a ``parameters`` cell ``lr = 0.1``, a small
work cell that also sleeps ``--trial-seconds`` (default 0), and a last cell that appends
``end <time.time()> lr=<lr>``. A gap is the next trial's ``start`` minus the previous
trial's ``end``; N trials give N - 1 gaps. Reported per
agent: the median, min and max gap, the agent process's total wall time, and both as a
multiple of the baseline's in the same run.

Where the gap goes, from the runners' stderr lines (time-stamped as they arrive) and the
times the test server received requests: ``end->saved`` (kernel shut down, notebook written:
nbsweep's ``finished (...)`` line, nbconvert's ``Writing ...``), ``saved->handout`` (W&B
reporting, process exit, the agent's wait until its next heartbeat gets the next run: the
real ``wandb agent`` only looks every 5 s), ``handout->kernel`` (process start, imports,
``wandb.init``, until the runner starts the kernel: nbsweep's ``running ...`` line,
nbconvert's ``Converting notebook ...``) and ``kernel->cell1``. ``wandb.init`` (nbsweep agent
only: the handout to its ``run ID: ...`` line) and ``wandb finish`` (the trial saved to the
run's ``complete`` on the file stream) are parts of those, where they can be seen.

Run it from the repository root, in an environment with nbsweep, wandb and nbconvert::

    pip install -e '.[bench]'
    python benchmarks/bench_agent.py --trials 4
    python benchmarks/bench_agent.py --trials 6 --json benchmarks/results/bench_agent.json
    python benchmarks/bench_agent.py --variants wandb-nbconvert,nbsweep-agent --poll 0.2

Expect roughly a minute for ``--trials 4``: the two ``wandb agent`` variants wait up to 5 s
per trial for their next heartbeat.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import (
    aligned,
    kill_tree,
    machine,
    versions,
    without_agent_env,
    write_json,
    write_notebook,
)

REPO = Path(__file__).resolve().parent.parent
PROJECT = "bench"
NOTEBOOK = "bench.ipynb"
LOG_ENV = "BENCH_LOG"
BASELINE = "wandb-nbconvert"
NBCONVERT_COMMAND = ["jupyter", "nbconvert", "--to", "notebook", "--execute", "${program}"]
NBSWEEP_RUN_COMMAND = ["nbsweep", "run", "${program}", "${args}"]
VERSIONS = ("nbsweep", "wandb", "nbconvert", "nbclient", "ipykernel", "jupyter_client")

# Lines the runners print, and what they mark.
KERNEL_STARTING = re.compile(r"^running \S.* -> |\[NbConvertApp\] Converting notebook ")
SAVED = re.compile(r"^(?:finished|failed|stopped) \(\S+\) in |\[NbConvertApp\] Writing ")
RUN_OPENED = re.compile(r"^run (\S+): ")  # nbsweep agent, after wandb.init returned
# Output lines worth showing: warnings and errors from the agents and the runners.
TROUBLE = re.compile(r"warning|error|traceback|exception", re.IGNORECASE)

PHASES = ("end->saved", "saved->handout", "handout->kernel", "kernel->cell1")
PARTS = ("wandb.init", "wandb finish")


@dataclass(frozen=True)
class Variant:
    name: str
    tag: str
    """Prefix of this variant's run ids (one server holds every variant's runs)."""
    sweep_command: list[str]
    nbsweep_agent: bool

    def command(self, entity: str, sweep_id: str, poll: float | None) -> list[str]:
        path = f"{entity}/{PROJECT}/{sweep_id}"
        if self.nbsweep_agent:
            extra = ["--poll", str(poll)] if poll is not None else []
            return [sys.executable, "-m", "nbsweep", "agent", path, *extra]
        return [str(Path(sys.executable).parent / "wandb"), "agent", path]


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant(BASELINE, "conv", NBCONVERT_COMMAND, nbsweep_agent=False),
        Variant("nbsweep-agent", "agent", NBCONVERT_COMMAND, nbsweep_agent=True),
        Variant("wandb-nbsweep-run", "run", NBSWEEP_RUN_COMMAND, nbsweep_agent=False),
    )
}


@dataclass
class Result:
    variant: Variant
    command: list[str]
    total: float
    starts: list[float]
    ends: list[float]
    lrs: list[str]
    first_trial: float
    """Agent process start to the first trial's first cell."""
    exit: float
    """The last trial's last cell to the agent process's exit."""
    phases: dict[str, list[float | None]] = field(default_factory=dict)
    """Per gap: where it went (PHASES sum to the gap; PARTS are inside them)."""
    per_trial: dict[str, list[float | None]] = field(default_factory=dict)
    """Per trial, the first included: ``wandb.init`` and ``kernel->cell1``."""
    trouble: dict[str, int] = field(default_factory=dict)
    """Output lines that look like warnings or errors, and how often each came."""
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What the test server heard of each trial's W&B run (none under nbconvert)."""

    @property
    def gaps(self) -> list[float]:
        return [start - end for end, start in zip(self.ends, self.starts[1:], strict=False)]

    def stats(self) -> dict[str, float]:
        gaps = self.gaps
        return {"median": statistics.median(gaps), "min": min(gaps), "max": max(gaps)}


# --------------------------------------------------------------------------- setup


def test_server_module() -> Any:
    """``tests/wandb_server.py``, imported from the repository's tests folder."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("wandb_server")


# Seconds each trial's work cell sleeps (--trial-seconds): a trial as long as a real one
# lets the agent's next kernel be ready when the trial ends.
SLEEP_ENV = "BENCH_TRIAL_SECONDS"


def write_bench_notebook(folder: Path) -> Path:
    """The four cells the module docstring describes, as ``folder / NOTEBOOK``."""
    return write_notebook(
        folder,
        [
            "import os, time\n"
            f"with open(os.environ[{LOG_ENV!r}], 'a') as _log:\n"
            "    _log.write(f'start {time.time()!r}\\n')",
            ("lr = 0.1", ["parameters"]),
            "x = sum(i * lr for i in range(100_000))\nprint(x)\n"
            f"time.sleep(float(os.environ.get({SLEEP_ENV!r}, '0')))",
            f"with open(os.environ[{LOG_ENV!r}], 'a') as _log:\n"
            "    _log.write(f'end {time.time()!r} lr={lr!r}\\n')",
        ],
        NOTEBOOK,
    )


def lr_values(trials: int) -> list[float]:
    return [round(0.1 * (index + 2), 4) for index in range(trials)]


def sweep_config(command: list[str], trials: int) -> dict[str, Any]:
    return {
        "program": NOTEBOOK,
        "method": "grid",
        "command": command,
        "parameters": {"lr": {"values": lr_values(trials)}},
    }


# --------------------------------------------------------------------------- running


class Lines:
    """A process's stdout and stderr lines, each stamped with ``time.time()`` on arrival."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, name: str) -> None:
        for line in stream:
            stamp = time.time()
            with self._lock:
                self.lines.append((stamp, name, line.rstrip("\n")))

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=10)

    def stamped(self, pattern: re.Pattern[str], stream: str = "stderr") -> list[float]:
        return [t for t, name, text in self.lines if name == stream and pattern.search(text)]

    def write(self, path: Path, since: float) -> None:
        """Every line, time-stamped relative to ``since``, for a look with --keep."""
        ordered = sorted(self.lines)
        text = "".join(f"{t - since:9.3f} [{name}] {line}\n" for t, name, line in ordered)
        path.write_text(text, encoding="utf-8")

    def matching(self, pattern: re.Pattern[str]) -> list[str]:
        return [f"[{name}] {text}" for _, name, text in sorted(self.lines) if pattern.search(text)]

    def tail(self, count: int = 25) -> str:
        ordered = sorted(self.lines)
        return "\n".join(f"  [{name}] {text}" for _, name, text in ordered[-count:])


def run_variant(
    module: Any,
    server: Any,
    variant: Variant,
    work: Path,
    trials: int,
    poll: float | None,
    timeout: float,
    clock_offset: float,
) -> Result:
    folder = work / variant.name
    folder.mkdir()
    write_bench_notebook(folder)
    log = folder / "bench.log"
    sweep_id = server.add_sweep(sweep_config(variant.sweep_command, trials), project=PROJECT)
    run_ids = [f"{variant.tag}{index}" for index in range(1, trials + 1)]
    server.script(
        sweep_id,
        [
            {"type": "run", "run_id": run_id, "args": {"lr": {"value": lr}}}
            for run_id, lr in zip(run_ids, lr_values(trials), strict=True)
        ]
        + [{"type": "exit"}],
    )
    env = {
        **module.wandb_env(server, folder, project=PROJECT),
        LOG_ENV: str(log),
        "PYTHONUNBUFFERED": "1",
    }
    command = variant.command(server.entity, sweep_id, poll)
    print(f"{variant.name}: {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.time()
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    lines = Lines(process)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        lines.join()
        raise SystemExit(
            f"{variant.name}: still running after {timeout:.0f}s, killed\n{lines.tail()}"
        ) from None
    finished = time.time()
    lines.join()
    lines.write(folder / "agent-output.txt", started)
    starts, ends, lrs = read_log(log)
    if code != 0 or len(starts) != trials or len(ends) != trials:
        raise SystemExit(
            f"{variant.name}: exit {code}, {len(starts)} starts and {len(ends)} ends logged "
            f"(expected {trials})\n{lines.tail()}"
        )
    result = Result(
        variant,
        command,
        total=finished - started,
        starts=starts,
        ends=ends,
        lrs=lrs,
        first_trial=starts[0] - started,
        exit=finished - ends[-1],
    )
    result.phases, result.per_trial = phases(result, lines, server, sweep_id, run_ids, clock_offset)
    for line in lines.matching(TROUBLE):
        result.trouble[line] = result.trouble.get(line, 0) + 1
    runs = server.runs
    result.runs = {
        run_id: {"complete": runs[run_id].complete, "exitcode": runs[run_id].exitcode}
        for run_id in run_ids
        if run_id in runs
    }
    return result


def read_log(log: Path) -> tuple[list[float], list[float], list[str]]:
    starts: list[float] = []
    ends: list[float] = []
    lrs: list[str] = []
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    for line in text.splitlines():
        kind, stamp, *rest = line.split()
        (starts if kind == "start" else ends).append(float(stamp))
        if kind == "end":
            lrs.append(rest[0].removeprefix("lr=") if rest else "?")
    return starts, ends, lrs


def phases(
    result: Result,
    lines: Lines,
    server: Any,
    sweep_id: str,
    run_ids: list[str],
    clock_offset: float,
) -> tuple[dict[str, list[float | None]], dict[str, list[float | None]]]:
    """Where each gap went, and the per-trial parts; None where a marker is missing (or
    not this runner's)."""
    trials = len(run_ids)
    handouts: dict[str, float] = {}
    for agent in server.agents.values():
        if agent.sweep != sweep_id:
            continue
        for heartbeat in agent.heartbeats:
            for command in heartbeat.commands:
                if command.get("type") == "run":
                    handouts.setdefault(command["run_id"], heartbeat.time + clock_offset)
    completes: dict[str, float] = {}
    for request in server.requests:
        if not request.path.endswith("/file_stream"):
            continue
        run_id = request.path.split("/")[-2]
        with contextlib.suppress(ValueError):
            if run_id in run_ids and json.loads(request.body or b"{}").get("complete"):
                completes.setdefault(run_id, request.time + clock_offset)

    def per_trial(stamps: list[float]) -> list[float | None]:
        return list(stamps) if len(stamps) == trials else [None] * trials

    kernel = per_trial(lines.stamped(KERNEL_STARTING))
    saved = per_trial(lines.stamped(SAVED))
    opened = per_trial(lines.stamped(RUN_OPENED)) if result.variant.nbsweep_agent else []
    handout = [handouts.get(run_id) for run_id in run_ids]
    complete = [completes.get(run_id) for run_id in run_ids]

    def between(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    found: dict[str, list[float | None]] = {name: [] for name in (*PHASES, *PARTS)}
    for gap in range(trials - 1):
        this, after = gap, gap + 1
        found["end->saved"].append(between(result.ends[this], saved[this]))
        found["saved->handout"].append(between(saved[this], handout[after]))
        found["handout->kernel"].append(between(handout[after], kernel[after]))
        found["kernel->cell1"].append(between(kernel[after], result.starts[after]))
        found["wandb.init"].append(between(handout[after], opened[after]) if opened else None)
        found["wandb finish"].append(between(saved[this], complete[this]))
    per_trial = {
        "wandb.init": [
            between(handout[index], opened[index]) if opened else None for index in range(trials)
        ],
        "kernel->cell1": [between(kernel[index], result.starts[index]) for index in range(trials)],
    }
    return found, per_trial


def warm_up(work: Path) -> None:
    """One untimed nbconvert and nbsweep run: page cache and __pycache__ for everyone."""
    folder = work / "warmup"
    folder.mkdir()
    notebook = write_bench_notebook(folder)
    env = without_agent_env()
    env[LOG_ENV] = str(folder / "bench.log")
    bin_dir = Path(sys.executable).parent
    for command in (
        [str(bin_dir / "jupyter"), "nbconvert", "--to", "notebook", "--execute", str(notebook)],
        [sys.executable, "-m", "nbsweep", "run", str(notebook), "-o", str(folder / "out.ipynb")],
        [sys.executable, "-c", "import wandb, wandb.sdk"],
    ):
        subprocess.run(command, cwd=folder, env=env, capture_output=True, check=True)


# --------------------------------------------------------------------------- reporting


def median_or_none(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def ratio(value: float, base: float | None) -> float | None:
    return None if base is None or base == 0 else value / base


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tables(results: list[Result]) -> str:
    base = next((r for r in results if r.variant.name == BASELINE), None)
    base_gap = base.stats()["median"] if base else None
    base_total = base.total if base else None
    main: list[tuple[str, ...]] = [
        (
            "agent",
            "gaps",
            "median gap s",
            "min s",
            "max s",
            "total s",
            "gap x base",
            "total x base",
            "1st cell s",
            "exit s",
        )
    ]
    for result in results:
        stats = result.stats()
        main.append(
            (
                result.variant.name,
                str(len(result.gaps)),
                fmt(stats["median"], 3),
                fmt(stats["min"], 3),
                fmt(stats["max"], 3),
                fmt(result.total),
                fmt(ratio(stats["median"], base_gap)),
                fmt(ratio(result.total, base_total)),
                fmt(result.first_trial),
                fmt(result.exit),
            )
        )
    parts: list[tuple[str, ...]] = [("median s per gap", *PHASES, *(f"({p})" for p in PARTS))]
    for result in results:
        parts.append(
            (
                result.variant.name,
                *(fmt(median_or_none(result.phases[name]), 3) for name in (*PHASES, *PARTS)),
            )
        )
    notes = []
    for result in results:
        reported = sum(run["complete"] for run in result.runs.values())
        notes.append(
            f"{result.variant.name}: lr seen {', '.join(result.lrs)}; "
            f"W&B runs completed {reported}/{len(result.starts)}"
        )
        notes.extend(f"  {count}x {line}" for line, count in result.trouble.items())
    return f"{aligned(main)}\n\n{aligned(parts)}\n\n" + "\n".join(notes)


def rounded(values: list[float | None]) -> list[float | None]:
    return [None if value is None else round(value, 4) for value in values]


def report(results: list[Result], trials: int, poll: float | None) -> dict[str, Any]:
    base = next((r for r in results if r.variant.name == BASELINE), None)
    variants: dict[str, Any] = {}
    for result in results:
        stats = result.stats()
        variants[result.variant.name] = {
            "command": result.command,
            "sweep_command": result.variant.sweep_command,
            "gaps": rounded(list(result.gaps)),
            **{f"gap_{key}": round(value, 4) for key, value in stats.items()},
            "total_s": round(result.total, 4),
            "first_cell_s": round(result.first_trial, 4),
            "exit_s": round(result.exit, 4),
            "gap_ratio_to_baseline": (
                round(stats["median"] / base.stats()["median"], 4) if base else None
            ),
            "total_ratio_to_baseline": round(result.total / base.total, 4) if base else None,
            "phases": {name: rounded(values) for name, values in result.phases.items()},
            "phase_medians": {
                name: None if (m := median_or_none(values)) is None else round(m, 4)
                for name, values in result.phases.items()
            },
            "lr_seen": result.lrs,
            "per_trial": {name: rounded(values) for name, values in result.per_trial.items()},
            "runs_reported": result.runs,
            "warnings": result.trouble,
        }
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(VERSIONS),
        "trials": trials,
        "nbsweep_poll": poll if poll is not None else "default",
        "baseline": BASELINE,
        "variants": variants,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the gap between sweep trials: wandb agent + nbconvert, nbsweep agent, "
        "wandb agent + nbsweep run, against a local W&B-protocol test server."
    )
    parser.add_argument("--trials", type=int, default=4, help="trials per agent (default 4)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, in the order to run (default {','.join(VARIANTS)})",
    )
    parser.add_argument(
        "--poll",
        type=float,
        help="nbsweep agent --poll SECONDS (default: not passed, nbsweep's default)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds per agent before it is killed (default 60 + 30 per trial)",
    )
    parser.add_argument(
        "--trial-seconds",
        type=float,
        default=0.0,
        help="seconds each trial's work cell sleeps (default 0: a trivial trial)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.trials < 2:
        parser.error("--trials must be at least 2 (a gap needs two trials)")
    args.variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.timeout is None:
        args.timeout = 60 + 30 * args.trials
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ[SLEEP_ENV] = str(args.trial_seconds)  # the agents and their kernels inherit it
    module = test_server_module()
    work = Path(tempfile.mkdtemp(prefix="nbsweep-bench-agent-"))
    clock_offset = time.time() - time.monotonic()  # the server stamps requests with monotonic
    results: list[Result] = []
    try:
        if not args.no_warmup:
            warm_up(work)
        with module.WandbTestServer() as server:
            for name in args.variants:
                result = run_variant(
                    module,
                    server,
                    VARIANTS[name],
                    work,
                    args.trials,
                    args.poll,
                    args.timeout,
                    clock_offset,
                )
                results.append(result)
                print(
                    f"{name}: median gap {result.stats()['median']:.2f}s, "
                    f"total {result.total:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
        poll = "default" if args.poll is None else f"{args.poll:g}"
        print(
            f"{args.trials} trials per agent of {args.trial_seconds:g} s sleep + work, "
            f"nbsweep agent --poll {poll}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
        )
        print(tables(results))
        if args.json is not None:
            write_json(args.json, report(results, args.trials, args.poll))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
