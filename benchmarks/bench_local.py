"""A whole local sweep against the status quo, and what one hand-out from the store costs.

Part 1, end to end. A trivial notebook (a ``parameters`` cell ``x = 0.5`` and a cell
``import nbsweep; nbsweep.log({'score': x})``) is run N times (``--trials``, default 50):

* ``nbconvert``: N sequential ``jupyter nbconvert --to notebook --execute --output OUT_i
  nb.ipynb`` runs (the status quo; it runs the defaults, nbconvert cannot set parameters);
* ``nbsweep --no-wandb``: ``nbsweep sweep --local sweep.yaml --store S`` (method random,
  ``run_cap: N``, ``x`` uniform on 0..1, metric ``score`` maximized), then the timed
  ``nbsweep agent local:ID --store S --workers W --no-wandb`` (``--workers``, default 2);
* ``nbsweep offline wandb``: the same without ``--no-wandb``: every trial is also an offline
  wandb run under the agent's ``./wandb/``;
* ``nbsweep --no-wandb`` with one worker, for a comparison at equal parallelism (left out
  when ``--workers 1``).

Each nbsweep variant gets a fresh folder and store. Reported: the wall time of the timed
command, per trial (wall / N), as a multiple of nbconvert's, and from the store's runs
(``Store.open(S).runs(ID)``): the median trial (hand-out to result recorded: wandb.init,
kernel, cells, notebook saved) and the per-agent gap (one run's ``finished_at`` to the next
``started_at`` of the same agent process, identified by the PID each run records: result
recorded, wandb finished where on, the next hand-out). The runs are checked: N of them, all
finished, each ``score`` equal to its ``x``.

Part 2, ``Store.hand_out`` alone. For 1, 8 and 32 agents (``--agents``), that many processes
(multiprocessing, ``spawn``) share a fresh store and each loops ``hand_out`` -> ``finish``,
with no notebook, until the sweep has nothing left. Each case runs on each database
(``--databases``): a fresh SQLite file, and a fresh database on a PostgreSQL server the
benchmark starts (the ``pgserver`` wheel, Unix socket; rows skipped with the reason where it
or psycopg is missing). 48 points, handed out by

* ``trivial``: a ``propose`` that returns the next point of a 6 x 8 grid (the store's cost);
* ``grid``: the real engine, ``nbsweep.local.engine.Engine(config).propose``, on that grid;
* ``bayes``: the real engine, bayes on ``x`` and ``y`` uniform on 0..1, ``run_cap: 48``.

The processes import everything and open the store first, then start together at a barrier.
A latency is one ``hand_out`` call that returned a run, waiting for the write lock included.
Reported per database, propose and agent count: p50, p99 and max of those, the median time
spent in ``propose`` (the engine, inside the lock), the longest call of all
(the last, empty one of each process included: an agent that never got the lock waited
there), the median ``finish``, the wall time from the barrier to the last process done, and
how many runs each process got, and hand-outs per second (runs / wall). With nothing
between ``finish`` and the next ``hand_out``, the agent holding the lock tends to get it
again (SQLite's busy handler makes the others sleep and retry); ``--trial-ms`` sleeps
between ``hand_out`` and ``finish``, a stand-in for the trial, so that the agents
interleave. Grid points are checked to be handed out exactly once.

Run it from the repository root, in an environment with nbsweep's ``local`` extra and
nbconvert (the tools are the console scripts next to ``sys.executable``)::

    pip install -e '.[local,bench]'
    python benchmarks/bench_local.py
    python benchmarks/bench_local.py --trials 20 --agents 1,3 --json benchmarks/results/local.json
    python benchmarks/bench_local.py --hand-out-only --trial-ms 20
    python benchmarks/bench_local.py --hand-out-only --databases postgres --agents 32

Everything runs in a temporary folder, deleted at the end, with its own ``HOME`` and no
``WANDB_*`` variables from the caller (plus ``WANDB_SILENT``, no git or code saving, no
system metrics or machine probes), so no account and no network. One untimed nbconvert run,
``nbsweep run`` and import of wandb and the engine come first. Expect about four minutes
for the defaults on two CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import (
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

from nbsweep.local.store import AgentIdentity, RunRecord, RunState, Store

GRID_X, GRID_Y = 6, 8  # 48 points
DATABASES = ("sqlite", "postgres")
POINTS = GRID_X * GRID_Y
PROPOSERS = ("trivial", "grid", "bayes")
BARRIER_TIMEOUT = 300.0  # seconds for every process to import and open the store
CREATED = re.compile(r"created local sweep (\S+)")
VERSIONS = (
    "nbsweep",
    "sweeps",
    "wandb",
    "nbconvert",
    "nbclient",
    "ipykernel",
    "jupyter_client",
    "scikit-learn",
)


# --------------------------------------------------------------------------- helpers


def run_command(
    command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float
) -> float:
    """Run ``command`` to its end, output into ``log``; its wall time, or exit on failure."""
    with log.open("w", encoding="utf-8") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(process)
            code = None
        elapsed = time.perf_counter() - started
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        why = f"still running after {timeout:.0f}s, killed" if code is None else f"exit {code}"
        raise SystemExit(f"{' '.join(command)}: {why}\n{tail}")
    return elapsed


def write_trivial_notebook(folder: Path) -> Path:
    """The part 1 subject: a parameters cell ``x = 0.5`` and a cell that logs it."""
    return write_notebook(
        folder, [("x = 0.5", ["parameters"]), "import nbsweep; nbsweep.log({'score': x})"]
    )


def sweep_yaml(trials: int) -> str:
    return (
        "program: nb.ipynb\n"
        "method: random\n"
        "metric:\n  name: score\n  goal: maximize\n"
        f"run_cap: {trials}\n"
        "parameters:\n  x:\n    distribution: uniform\n    min: 0\n    max: 1\n"
    )


# --------------------------------------------------------------------------- part 1


@dataclass
class Variant:
    name: str
    workers: int
    wandb: bool
    wall: float = 0.0
    create: float = 0.0
    """``nbsweep sweep --local`` (not in ``wall``)."""
    trial_times: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    agents: int = 0
    offline_runs: int = 0


def nbconvert_runs(work: Path, env: dict[str, str], trials: int) -> tuple[float, list[float]]:
    folder = work / "nbconvert"
    folder.mkdir()
    notebook = write_trivial_notebook(folder)
    command = [*console_script("jupyter", "jupyter"), "nbconvert", "--to", "notebook", "--execute"]
    times = []
    started = time.perf_counter()
    for index in range(trials):
        output = folder / f"out_{index}.ipynb"
        times.append(
            run_command(
                [*command, "--output", str(output), str(notebook)],
                folder,
                env,
                folder / "nbconvert-output.txt",
                timeout=120,
            )
        )
        if not output.is_file():
            raise SystemExit(f"nbconvert run {index} left no {output}")
        if (index + 1) % 10 == 0:
            print(f"nbconvert: {index + 1}/{trials}", file=sys.stderr, flush=True)
    return time.perf_counter() - started, times


def agent_gaps(runs: list[RunRecord]) -> tuple[list[float], int]:
    """Per agent process: each run's ``finished_at`` to its next run's ``started_at``."""
    by_agent: dict[AgentIdentity, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.agent is not None and run.started_at is not None and run.finished_at is not None:
            by_agent[run.agent].append(run)
    gaps = []
    for own in by_agent.values():
        own.sort(key=lambda run: run.started_at or 0.0)
        gaps.extend(
            after.started_at - before.finished_at
            for before, after in itertools.pairwise(own)
            if after.started_at is not None and before.finished_at is not None
        )
    return gaps, len(by_agent)


def nbsweep_sweep(work: Path, env: dict[str, str], variant: Variant, trials: int) -> None:
    folder = work / re.sub(r"[^a-z0-9]+", "-", variant.name).strip("-")
    folder.mkdir()
    write_trivial_notebook(folder)
    (folder / "sweep.yaml").write_text(sweep_yaml(trials), encoding="utf-8")
    store = folder / "store.db"
    nbsweep = console_script("nbsweep", "nbsweep")
    created = folder / "sweep-output.txt"
    create_command = [*nbsweep, "sweep", "--local", "sweep.yaml", "--store", str(store)]
    variant.create = run_command(create_command, folder, env, created, timeout=120)
    found = CREATED.search(created.read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit(f"no sweep id in the output of {' '.join(create_command)}")
    sweep_id = found[1]
    command = [
        *nbsweep,
        *("agent", f"local:{sweep_id}", "--store", str(store)),
        *("--workers", str(variant.workers)),
        *(() if variant.wandb else ("--no-wandb",)),
    ]
    print(f"{variant.name}: {' '.join(command)}", file=sys.stderr, flush=True)
    variant.wall = run_command(
        command, folder, env, folder / "agent-output.txt", timeout=120 + 10 * trials
    )
    with Store.open(store) as opened:
        runs = opened.runs(sweep_id)
    problems = [
        f"{run.run_id}: {run.state.value}, x={run.values.get('x')}, summary {run.summary}"
        for run in runs
        if run.state is not RunState.finished
        or not math.isclose(float(run.summary.get("score", math.nan)), run.values["x"])
    ]
    if len(runs) != trials or problems:
        raise SystemExit(f"{variant.name}: {len(runs)} runs (expected {trials}); {problems[:5]}")
    variant.trial_times = [
        run.finished_at - run.started_at
        for run in runs
        if run.finished_at is not None and run.started_at is not None
    ]
    variant.gaps, variant.agents = agent_gaps(runs)
    variant.offline_runs = len(list((folder / "wandb").glob("offline-run-*")))
    if variant.wandb and variant.offline_runs != trials:
        raise SystemExit(f"{variant.name}: {variant.offline_runs} offline wandb runs, not {trials}")


def warm_up(work: Path, env: dict[str, str]) -> None:
    """Untimed: page cache, __pycache__, the IPython profile in the fresh home."""
    folder = work / "warmup"
    folder.mkdir()
    notebook = write_trivial_notebook(folder)
    log = folder / "output.txt"
    nbconvert = [*console_script("jupyter", "jupyter"), "nbconvert", "--to", "notebook"]
    nbsweep = console_script("nbsweep", "nbsweep")
    imports = "import wandb, wandb.sdk, nbsweep.local.engine as e; e.load_engine()"
    for command in (
        [*nbconvert, "--execute", "--output", str(folder / "a.ipynb"), str(notebook)],
        [*nbsweep, "run", str(notebook), "-o", str(folder / "b.ipynb")],
        [sys.executable, "-c", imports],
    ):
        run_command(command, folder, env, log, timeout=180)


# --------------------------------------------------------------------------- part 2


def sweep_config(proposer: str) -> dict[str, Any]:
    metric = {"name": "score", "goal": "maximize"}
    if proposer == "bayes":
        uniform = {"distribution": "uniform", "min": 0, "max": 1}
        return {
            "method": "bayes",
            "metric": metric,
            "run_cap": POINTS,
            "parameters": {"x": dict(uniform), "y": dict(uniform)},
        }
    return {
        "method": "grid",
        "metric": metric,
        "parameters": {
            "x": {"values": list(range(GRID_X))},
            "y": {"values": list(range(GRID_Y))},
        },
    }


def make_propose(proposer: str, config: dict[str, Any]) -> Any:
    if proposer == "trivial":
        points = [{"x": x, "y": y} for x in range(GRID_X) for y in range(GRID_Y)]
        return lambda runs: dict(points[len(runs)]) if len(runs) < len(points) else None
    from nbsweep.local.engine import Engine

    return Engine(config).propose  # imports the engine (and scikit-learn) now


class Timed:
    """``propose``, timed: each call's seconds go to ``calls``."""

    def __init__(self, propose: Any) -> None:
        self.propose, self.calls = propose, []

    def __call__(self, runs: list[RunRecord]) -> Any:
        started = time.perf_counter()
        try:
            return self.propose(runs)
        finally:
            self.calls.append(time.perf_counter() - started)


def hand_out_worker(
    store_path: str,
    sweep_id: str,
    proposer: str,
    config: dict[str, Any],
    trial: float,
    barrier: Any,
    results: Any,
) -> None:
    """One agent: hand_out -> finish until the sweep has nothing left; times go to results."""
    try:
        propose = Timed(make_propose(proposer, config))
        store = Store.open(store_path if "://" in store_path else Path(store_path))
        identity = AgentIdentity.current()
        barrier.wait(BARRIER_TIMEOUT)
        released = time.time()
        hand_outs: list[float] = []
        finishes: list[float] = []
        while True:
            before = time.perf_counter()
            run = store.hand_out(sweep_id, identity, propose)
            after = time.perf_counter()
            if run is None:
                break
            hand_outs.append(after - before)
            if trial:
                time.sleep(trial)
            score = -((run.values["x"] - 0.3) ** 2) - (run.values["y"] - 0.6) ** 2
            finishing = time.perf_counter()
            store.finish(run.run_id, run.agent, RunState.finished, {"score": score}, None)
            finishes.append(time.perf_counter() - finishing)
        store.close()
        results.put(
            {
                "pid": os.getpid(),
                "hand_outs": hand_outs,
                "finishes": finishes,
                "proposing": propose.calls,
                "empty": after - before,
                "released": released,
                "ended": time.time(),
            }
        )
    except BaseException as error:
        with contextlib.suppress(BaseException):
            barrier.abort()
        results.put({"pid": os.getpid(), "error": f"{type(error).__name__}: {error}"})


@dataclass
class HandOut:
    database: str
    proposer: str
    agents: int
    hand_outs: list[float] = field(default_factory=list)
    proposing: list[float] = field(default_factory=list)
    finishes: list[float] = field(default_factory=list)
    empties: list[float] = field(default_factory=list)
    per_agent: list[int] = field(default_factory=list)
    wall: float = 0.0


class PostgresServer:
    """A PostgreSQL server in user space for the run (pgserver), and fresh databases on it."""

    def __init__(self, work: Path) -> None:
        import pgserver
        import psycopg  # noqa: F401  (nbsweep's driver: missing means no row)

        self.server = pgserver.get_server(work / "pgdata", cleanup_mode="stop")
        self.count = 0

    def fresh_database(self) -> str:
        import psycopg

        self.count += 1
        name = f"bench_{self.count}"
        base = self.server.get_uri()
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return base.replace("/postgres?", f"/{name}?", 1)

    def stop(self) -> None:
        self.server.cleanup()


def hand_out_case(
    work: Path,
    database: str,
    proposer: str,
    agents: int,
    trial: float,
    postgres: PostgresServer | None,
) -> HandOut:
    config = sweep_config(proposer)
    if database == "postgres":
        assert postgres is not None
        path: Path | str = postgres.fresh_database()
    else:
        path = work / "hand-out" / f"{proposer}-{agents}.db"
        path.parent.mkdir(exist_ok=True)
    with Store.open(path) as store:
        sweep_id = store.create_sweep(config)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(agents)
    results = context.Queue()
    processes = [
        context.Process(
            target=hand_out_worker,
            args=(str(path), sweep_id, proposer, config, trial, barrier, results),
            name=f"hand-out-{proposer}-{index}",
        )
        for index in range(agents)
    ]
    for process in processes:
        process.start()
    reports = []
    try:
        deadline = time.monotonic() + BARRIER_TIMEOUT + 300
        while len(reports) < agents:
            reports.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
        for process in processes:
            process.join(timeout=30)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()
    errors = [report["error"] for report in reports if "error" in report]
    if errors:
        raise SystemExit(f"hand-out {proposer} x{agents}: {errors}")
    case = HandOut(database, proposer, agents)
    for report in reports:
        case.hand_outs.extend(report["hand_outs"])
        case.proposing.extend(report["proposing"])
        case.finishes.extend(report["finishes"])
        case.empties.append(report["empty"])
        case.per_agent.append(len(report["hand_outs"]))
    case.wall = max(r["ended"] for r in reports) - min(r["released"] for r in reports)
    with Store.open(path) as store:
        runs = store.runs(sweep_id)
    points = {(run.values["x"], run.values["y"]) for run in runs}
    finished = sum(run.state is RunState.finished for run in runs)
    if len(runs) != POINTS or finished != POINTS or len(case.hand_outs) != POINTS:
        raise SystemExit(
            f"hand-out {proposer} x{agents}: {len(runs)} runs, {finished} finished, "
            f"{len(case.hand_outs)} hand-outs timed (expected {POINTS})"
        )
    if proposer != "bayes" and len(points) != POINTS:
        raise SystemExit(f"hand-out {proposer} x{agents}: {len(points)} distinct grid points")
    return case


# --------------------------------------------------------------------------- reporting


def fmt(value: float | None, digits: int = 3, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def sweep_table(trials: int, base: tuple[float, list[float]], variants: list[Variant]) -> str:
    base_wall, base_times = base
    rows: list[tuple[str, ...]] = [
        (
            "variant",
            "workers",
            "trials",
            "wall s",
            "s/trial",
            "x nbconvert",
            "trial p50 s",
            "gap p50 s",
            "gap p95 s",
        ),
        (
            "nbconvert (sequential)",
            "1",
            str(trials),
            fmt(base_wall, 2),
            fmt(base_wall / trials),
            "1.00",
            fmt(statistics.median(base_times)),
            "-",
            "-",
        ),
    ]
    for variant in variants:
        rows.append(
            (
                variant.name,
                str(variant.workers),
                str(trials),
                fmt(variant.wall, 2),
                fmt(variant.wall / trials),
                fmt(variant.wall / base_wall, 2),
                fmt(statistics.median(variant.trial_times)),
                fmt(percentile(variant.gaps, 0.5)),
                fmt(percentile(variant.gaps, 0.95)),
            )
        )
    notes = [
        f"{variant.name}: sweep --local {variant.create:.2f}s (not in wall), "
        f"{variant.agents} agent processes, {variant.offline_runs} offline wandb runs"
        for variant in variants
    ]
    return aligned(rows) + "\n" + "\n".join(notes)


def hand_out_table(cases: list[HandOut]) -> str:
    rows: list[tuple[str, ...]] = [
        (
            "database",
            "propose",
            "agents",
            "p50 ms",
            "p99 ms",
            "max ms",
            "propose p50 ms",
            "longest call ms",
            "finish p50 ms",
            "wall s",
            "hand-outs/s",
            "runs per agent",
        )
    ]
    for case in cases:
        rows.append(
            (
                case.database,
                case.proposer,
                str(case.agents),
                fmt(percentile(case.hand_outs, 0.5), 2, 1000),
                fmt(percentile(case.hand_outs, 0.99), 2, 1000),
                fmt(max(case.hand_outs), 2, 1000),
                fmt(percentile(case.proposing, 0.5), 2, 1000),
                fmt(max(case.hand_outs + case.empties), 2, 1000),
                fmt(percentile(case.finishes, 0.5), 2, 1000),
                fmt(case.wall, 2),
                fmt(len(case.hand_outs) / case.wall, 1),
                ",".join(map(str, sorted(case.per_agent, reverse=True))),
            )
        )
    return aligned(rows)


def rounded(values: list[float]) -> list[float]:
    return [round(value, 5) for value in values]


def report(
    args: argparse.Namespace,
    base: tuple[float, list[float]] | None,
    variants: list[Variant],
    cases: list[HandOut],
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(VERSIONS),
        "trials": args.trials,
        "trial_ms": args.trial_ms,
    }
    if base is not None:
        data["nbconvert"] = {"wall": round(base[0], 4), "times": rounded(base[1])}
        data["nbsweep"] = {
            variant.name: {
                "workers": variant.workers,
                "wandb": variant.wandb,
                "wall": round(variant.wall, 4),
                "per_trial": round(variant.wall / args.trials, 4),
                "ratio_to_nbconvert": round(variant.wall / base[0], 4),
                "create": round(variant.create, 4),
                "trial_times": rounded(variant.trial_times),
                "gaps": rounded(variant.gaps),
            }
            for variant in variants
        }
    data["hand_out"] = [
        {
            "database": case.database,
            "propose": case.proposer,
            "agents": case.agents,
            "p50": percentile(case.hand_outs, 0.5),
            "p95": percentile(case.hand_outs, 0.95),
            "p99": percentile(case.hand_outs, 0.99),
            "propose_p50": percentile(case.proposing, 0.5),
            "max": max(case.hand_outs),
            "longest_call": max(case.hand_outs + case.empties),
            "wall": round(case.wall, 4),
            "per_agent": case.per_agent,
            "hand_outs": rounded(case.hand_outs),
            "finishes": rounded(case.finishes),
            "proposing": rounded(case.proposing),
            "empties": rounded(case.empties),
        }
        for case in cases
    ]
    return data


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A local nbsweep sweep against sequential nbconvert runs, and the "
        "latency of Store.hand_out with several agents."
    )
    parser.add_argument("--trials", type=int, default=50, help="trials per tool (default 50)")
    parser.add_argument(
        "--workers", type=int, default=2, help="nbsweep agent --workers (default 2)"
    )
    parser.add_argument(
        "--agents",
        default="1,8,32",
        metavar="N,N,...",
        help="agent process counts for the hand-out timing (default 1,8,32)",
    )
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        metavar="NAME,...",
        help="hand-out timing on these stores: sqlite, postgres (default both)",
    )
    parser.add_argument(
        "--trial-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="hand-out timing: sleep this long between hand_out and finish (default 0)",
    )
    parser.add_argument(
        "--hand-out-only", action="store_true", help="skip part 1 (the sweeps and nbconvert)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.trials < 2 or args.workers < 1 or args.trial_ms < 0:
        parser.error("--trials must be at least 2, --workers at least 1, --trial-ms at least 0")
    try:
        args.agents = [int(part) for part in args.agents.split(",") if part.strip()]
    except ValueError:
        parser.error("--agents must look like 1,3,8")
    if not args.agents or min(args.agents) < 1:
        parser.error("--agents needs at least one count, each at least 1")
    args.databases = [part.strip() for part in args.databases.split(",") if part.strip()]
    if not args.databases or set(args.databases) - set(DATABASES):
        parser.error(f"--databases takes {', '.join(DATABASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nbsweep-bench-local-"))
    try:
        base, variants = None, []
        if not args.hand_out_only:
            home = work / "home"
            home.mkdir()
            env = isolated_env(home, offline=False)
            print("warming up", file=sys.stderr, flush=True)
            warm_up(work, env)
            variants = [
                Variant("nbsweep --no-wandb", args.workers, wandb=False),
                Variant("nbsweep offline wandb", args.workers, wandb=True),
            ]
            if args.workers != 1:
                variants.append(Variant("nbsweep --no-wandb, 1 worker", 1, wandb=False))
            base = nbconvert_runs(work, env, args.trials)
            for variant in variants:
                nbsweep_sweep(work, env, variant, args.trials)
        cases, postgres = [], None
        databases = list(args.databases)
        if "postgres" in databases:
            try:
                postgres = PostgresServer(work)
            except ImportError as error:
                print(f"postgres rows skipped: {error} (pip install 'nbsweep[test]')")
                databases.remove("postgres")
        try:
            for proposer in PROPOSERS:
                for agents in args.agents:
                    for database in databases:
                        print(f"hand-out: {database} {proposer} x{agents}", file=sys.stderr)
                        cases.append(
                            hand_out_case(
                                work, database, proposer, agents, args.trial_ms / 1000, postgres
                            )
                        )
        finally:
            if postgres is not None:
                postgres.stop()
        print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
        if base is not None:
            print(f"{args.trials} trials of a trivial notebook")
            print(sweep_table(args.trials, base, variants))
            print()
        print(
            f"Store.hand_out, {POINTS} points, {args.trial_ms:g} ms between hand_out and "
            "finish; p50/p99/max over the calls that returned a run"
        )
        print(hand_out_table(cases))
        if args.json is not None:
            write_json(args.json, report(args, base, variants, cases))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
