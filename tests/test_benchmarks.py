"""The benchmark scripts still run: `overhead.py --quick`, `bench_setup.py --quick`,
`bench_dashboard.py --quick`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import MARKER_ENV, wait_until_gone

pytest.importorskip("sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'")

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).parent.parent


def _run_quick(
    script: str, json_path: Path, marker: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``benchmarks/SCRIPT --quick``, its processes marked; it must exit 0. Its stdout lines."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick", "--json", str(json_path)],
        cwd=ROOT,
        env={**os.environ, MARKER_ENV: marker},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, result.stdout.splitlines()


def _no_process_left(marker: str) -> None:
    left = wait_until_gone(marker)
    for process in left:
        process.kill()
    assert not left, f"the benchmark left processes: {[p.cmdline() for p in left]}"


def test_overhead_quick_runs_every_row_and_leaves_no_process(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    json_path = tmp_path / "overhead.json"
    result, lines = _run_quick("overhead.py", json_path, marker)
    assert any(line.split()[:3] == ["notebook", "tool", "median"] for line in lines)
    for tool in ("own compute", "script", "nbconvert", "papermill", "nbsweep run"):
        assert any(line.startswith("trivial") and tool in line for line in lines), tool
    assert any(line.split()[:3] == ["notebook", "local", "sweep"] for line in lines)
    sweep_rows = [line.split() for line in lines if line.split()[:3] == ["trivial", "agent", "3"]]
    assert len(sweep_rows) == 1 and sweep_rows[0][3] != "failed", result.stdout
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["problems"] == []
    assert [len(sweep["trial_times"]) for sweep in data["sweeps"]] == [3]
    _no_process_left(marker)


def _route(row: str) -> str:
    """A table row's route: what is between the notebook's name and its wall seconds."""
    words = row.split()[1:]
    wall = next(i for i, w in enumerate(words) if "." in w or w == "skipped")
    return " ".join(words[:wall])


def test_bench_setup_quick_runs_every_route_and_leaves_no_process(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    json_path = tmp_path / "setup.json"
    result, lines = _run_quick("bench_setup.py", json_path, marker)
    assert any(line.split()[:3] == ["notebook", "route", "wall"] for line in lines)
    for notebook in ("papermill", "wandb"):
        for route in ("nbsweep (setup once)", "in-process", "script x 2"):
            row = [line for line in lines if line.startswith(notebook) and _route(line) == route]
            assert len(row) == 1 and "failed" not in row[0], (notebook, route, result.stdout)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["problems"] == []
    for routes in data["notebooks"].values():
        in_process = next(route for route in routes if route["route"] == "in-process")
        assert in_process["ratio_to_in_process"] == 1.0
    _no_process_left(marker)


def test_bench_dashboard_quick_measures_every_figure_and_leaves_no_process(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn", reason="the dashboard needs: pip install 'nbsweep[dashboard]'")
    marker = uuid.uuid4().hex
    json_path = tmp_path / "dashboard.json"
    result, lines = _run_quick("bench_dashboard.py", json_path, marker)
    assert any(line.startswith("sweep") and "20 runs, 100 history rows" in line for line in lines)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["http"]["runs"] == 20 and data["http"]["history_rows"] == 100, result.stdout
    assert data["update"]["runs"] == 1 and data["hour"]["polls"] == 20
    if isinstance(data["browser"], dict):  # a string says why the browser was left out
        assert data["browser"]["everything_s"] >= data["browser"]["table_s"] > 0
    _no_process_left(marker)
