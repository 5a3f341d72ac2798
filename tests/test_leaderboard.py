"""The leaderboard of a local sweep: ranking, the text table, JSON, and the two pictures.

Runs and sweeps here are small dataclasses with the store's attributes: the leaderboard reads
attributes only and never imports the store."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from nbsweep.errors import UsageError
from nbsweep.local import leaderboard
from nbsweep.local.plots import plot

SVG = "{http://www.w3.org/2000/svg}"


class State(Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CRASHED = "crashed"
    STOPPED = "stopped"


@dataclass
class Run:
    run_id: str
    state: State = State.FINISHED
    values: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    notebook: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Sweep:
    sweep_id: str = "k3x9q2ab"
    config: dict[str, Any] = field(default_factory=dict)
    state: str = "running"


def sweep_on(name: str = "val_loss", goal: str | None = "minimize") -> Sweep:
    metric = {"name": name} if goal is None else {"name": name, "goal": goal}
    return Sweep(config={"method": "random", "metric": metric, "parameters": {}})


def scored(run_id: str, value: Any, created: float, **values: Any) -> Run:
    return Run(run_id, values=values, created_at=created, summary={"val_loss": value})


def ids(runs: list[Run]) -> list[str]:
    return [run.run_id for run in runs]


def thirty_runs() -> list[Run]:
    """A sweep in progress: every state, a log-spread learning rate, a nested group."""
    runs = []
    for i in range(30):
        lr = 10 ** (-5 + 4 * ((i * 7) % 30) / 29)
        hidden = [16, 32, 64, 128, 256][i % 5]
        loss = 0.1 + (math.log10(lr) + 2.7) ** 2 * 0.15 + 8 / hidden
        state = {5: State.FAILED, 9: State.STOPPED, 22: State.STOPPED, 29: State.RUNNING}
        run = Run(
            f"run-{i + 1:02d}",
            state.get(i, State.PENDING if i == 28 else State.FINISHED),
            {"learning_rate": lr, "hidden": hidden, "optimizer": {"name": "adam", "beta1": 0.9}},
            created_at=1000.0 + 60 * i,
            started_at=1001.0 + 60 * i,
            finished_at=1050.0 + 60 * i,
            summary={"val_loss": loss},
            notebook=f"nbsweep-runs/k3x9q2ab/run-{i + 1:02d}/digits.ipynb",
        )
        if i in (5, 28):
            run.summary = {}
        if i == 28:
            run.started_at = run.finished_at = None
        runs.append(run)
    return runs


# Ranking


def test_rank_minimize_is_the_default_and_ties_go_by_creation():
    runs = [scored("a", 0.5, 1), scored("b", 0.2, 2), scored("c", 0.9, 3), scored("d", 0.2, 0)]
    assert ids(leaderboard.rank(sweep_on(goal=None), runs)) == ["d", "b", "a", "c"]
    assert ids(leaderboard.rank(sweep_on(goal="minimize"), runs)) == ["d", "b", "a", "c"]


def test_rank_maximize():
    runs = [scored("a", 0.5, 1), scored("b", 0.2, 2), scored("c", 0.9, 3)]
    assert ids(leaderboard.rank(sweep_on(goal="maximize"), runs)) == ["c", "a", "b"]
    assert leaderboard.best(sweep_on(goal="maximize"), runs).run_id == "c"


def test_runs_without_the_metric_go_last_by_creation_after_nan():
    runs = [
        Run("late", created_at=9),
        scored("nan", "NaN", 5),  # how --metrics-json writes a NaN
        Run("early", created_at=1, summary={"other": 1.0}),
        scored("text", "oops", 0),  # not a number: as if missing
        scored("good", 3.0, 7),
        scored("inf", float("inf"), 2),
    ]
    ranked = ids(leaderboard.rank(sweep_on(), runs))
    assert ranked == ["good", "inf", "nan", "text", "early", "late"]
    assert leaderboard.best(sweep_on(), [Run("x"), scored("n", math.nan, 1)]) is None


def test_metric_falls_back_to_the_last_logged_value():
    history = [{"step": 0, "val_loss": 0.9}, {"step": 1, "val_loss": 0.4}, {"step": 2, "acc": 1}]
    running = Run("r", State.RUNNING, history=history)
    assert leaderboard.metric_value(running, "val_loss") == 0.4
    nested = Run("n", summary={"val": {"loss": 0.3}})
    assert leaderboard.metric_value(nested, "val.loss") == 0.3
    assert leaderboard.metric_value(nested, None) is None


def test_without_a_metric_runs_are_in_creation_order():
    runs = [Run("b", created_at=2), Run("a", created_at=1)]
    assert ids(leaderboard.rank(Sweep(), runs)) == ["a", "b"]
    text = leaderboard.table(Sweep(), runs)
    assert "no metric" in text.splitlines()[0]
    assert "best:" not in text


# The table


def test_table_columns_nested_parameters_and_best():
    runs = [
        Run("eager-1", State.FINISHED, {"lr": 0.01, "hidden": 64, "opt": {"name": "adam",
            "beta1": 0.9}}, 1.0, 10.0, 75.0, {"val_loss": 0.25},
            "nbsweep-runs/k3x9q2ab/eager-1/digits.ipynb"),
        Run("brisk-2", State.RUNNING, {"lr": 1e-05, "hidden": 32, "opt": {"name": "sgd",
            "beta1": 0.5}}, 2.0, 100.0, None, {"val_loss": 0.5}, None),
    ]  # fmt: skip
    lines = leaderboard.table(sweep_on(), runs, width=None, now=230.0).splitlines()
    assert lines[0] == "sweep k3x9q2ab: val_loss (minimize)"
    assert lines[1].split() == [
        "#", "run", "state", "val_loss", "duration", "parameters", "notebook",
    ]  # fmt: skip
    assert lines[2].split()[:5] == ["1", "eager-1", "finished", "0.25", "1m05s"]
    assert "lr=0.01 hidden=64 opt.name=adam opt.beta1=0.9" in lines[2]
    assert lines[2].endswith("nbsweep-runs/k3x9q2ab/eager-1/digits.ipynb")
    assert lines[3].split()[:5] == ["2", "brisk-2", "running", "0.5", "2m10s"]  # so far
    assert "lr=1e-05 hidden=32 opt.name=sgd opt.beta1=0.5" in lines[3]
    assert lines[4] == "2 runs: 1 finished, 1 running"
    assert lines[5] == (
        "best: eager-1 val_loss=0.25 notebook: nbsweep-runs/k3x9q2ab/eager-1/digits.ipynb"
    )


def test_totals_line_counts_every_state():
    states = [State.FINISHED] * 9 + [State.RUNNING, State.FAILED, State.STOPPED]
    runs = [Run(f"r{i}", state, created_at=i) for i, state in enumerate(states)]
    text = leaderboard.table(sweep_on(), runs)
    assert "12 runs: 9 finished, 1 running, 1 failed, 1 stopped\n" in text
    assert leaderboard.totals(runs) == {
        "finished": 9, "running": 1, "pending": 0, "failed": 1, "crashed": 0, "stopped": 1,
    }  # fmt: skip
    assert leaderboard.table(sweep_on(), []).splitlines() == [
        "sweep k3x9q2ab: val_loss (minimize)",
        "0 runs",
    ]


def test_table_fits_its_width_by_shortening_parameters_and_paths():
    runs = thirty_runs()
    narrow = leaderboard.table(sweep_on(), runs, width=100)
    for line in narrow.splitlines()[1:-2]:
        assert len(line) <= 100, line
    assert re.search(r"  \.\.\.\S*/run-12/digits\.ipynb$", narrow, re.M)  # paths keep their end
    wide = leaderboard.table(sweep_on(), runs, width=None)
    assert "optimizer.name=adam optimizer.beta1=0.9" in wide
    assert "..." not in wide


def test_duration_is_missing_until_started_and_states_may_be_plain_strings():
    assert leaderboard.duration(Run("p", State.PENDING)) is None
    assert leaderboard.duration(Run("f", "finished", started_at=5.0, finished_at=7.5)) == 2.5
    assert leaderboard.duration(Run("r", "running", started_at=5.0), now=65.0) == 60.0
    assert leaderboard.state_of(Run("s", "stopped")) == "stopped"


# JSON


def test_json_round_trips_with_non_finite_values_as_strings():
    runs = [
        Run("a", State.FINISHED, {"opt": {"lr": 0.1}, "layers": (1, 2)}, 1.0, 1.0, 3.0,
            {"val_loss": 0.5, "grad": math.inf}, "a.ipynb",
            [{"step": 0, "val_loss": math.nan}, {"step": 1, "val_loss": 0.5}]),
        Run("b", State.FAILED, {"opt": {"lr": 1.0}}, 2.0, summary={"val_loss": -math.inf}),
        Run("c", State.PENDING, created_at=3.0),
    ]  # fmt: skip
    data = leaderboard.as_json(sweep_on(), runs)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["sweep_id"] == "k3x9q2ab"
    assert data["metric"] == {"name": "val_loss", "goal": "minimize"}
    assert [(r["rank"], r["run_id"], r["metric"]) for r in data["runs"]] == [
        (1, "b", "-Infinity"), (2, "a", 0.5), (3, "c", None),
    ]  # fmt: skip
    first = data["runs"][1]
    assert first["summary"] == {"val_loss": 0.5, "grad": "Infinity"}
    assert first["history"][0] == {"step": 0, "val_loss": "NaN"}
    assert first["parameters"] == {"opt.lr": 0.1, "layers": [1, 2]}
    assert first["values"] == {"opt": {"lr": 0.1}, "layers": [1, 2]}
    assert (first["state"], first["duration"], first["notebook"]) == ("finished", 2.0, "a.ipynb")
    assert data["totals"]["finished"] == 1 and data["totals"]["pending"] == 1
    assert data["best"] == {"run_id": "b", "metric": "-Infinity", "notebook": None}
    assert leaderboard.as_json(Sweep(), [])["best"] is None


# Pictures


def svgs(page: str) -> dict[str, ET.Element]:
    found = {}
    for chunk in page.split("<svg ")[1:]:
        element = ET.fromstring("<svg " + chunk.split("</svg>")[0] + "</svg>")
        found[element.get("class")] = element
    return found


def texts(svg: ET.Element) -> list[str]:
    return [element.text or "" for element in svg.iter(f"{SVG}text")]


def best_so_far(svg: ET.Element) -> list[float]:
    for element in svg.iter(f"{SVG}polyline"):
        title = element.find(f"{SVG}title")
        if title is not None and title.text == "best so far":
            return [float(point.split(",")[1]) for point in element.get("points").split()]
    raise AssertionError("no best-so-far line")


def test_html_is_one_page_with_both_views_as_inline_svg(tmp_path):
    path = tmp_path / "sweep.html"
    runs = thirty_runs()
    plot(sweep_on(), runs, path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    views = svgs(page)
    assert set(views) == {"progress", "parallel"}
    progress, parallel = views["progress"], views["parallel"]
    assert len(list(progress.iter(f"{SVG}polygon"))) > 20  # the trials' markers
    top = leaderboard.best(sweep_on(), runs)
    assert f"best: {top.run_id}" in texts(progress)
    assert "2 trials without val_loss" in texts(progress)
    assert len(list(parallel.iter(f"{SVG}polyline"))) > 30  # a line per trial, and the axes
    names = texts(parallel)
    assert {"learning_rate (log)", "hidden", "optimizer.name", "val_loss"} <= set(names)
    assert f"{top.run_id} (finished) val_loss=" in page  # hover text
    assert list(tmp_path.iterdir()) == [path]


def test_best_so_far_follows_the_goal(tmp_path):
    runs = [scored("a", 0.5, 1), scored("b", 0.2, 2), scored("c", 0.9, 3), scored("d", 0.1, 4)]
    for goal in ("minimize", "maximize"):
        plot(sweep_on(goal=goal), runs, tmp_path / f"{goal}.html")
        ys = best_so_far(svgs((tmp_path / f"{goal}.html").read_text())["progress"])
        down = [b - a for a, b in itertools.pairwise(ys)]  # SVG's y grows downwards
        assert all(d >= 0 for d in down) if goal == "minimize" else all(d <= 0 for d in down)
        assert any(d != 0 for d in down)


def test_html_copes_with_no_runs_no_metric_and_odd_values(tmp_path):
    odd = {"flag": True, "none": None, "sizes": [1, 2], "text": "<b>&"}
    cases = {
        "empty": (sweep_on(), []),
        "no-metric": (Sweep(), [Run("a", values={"x": 1}), Run("b", values={"x": 2})]),
        "odd": (sweep_on(), [scored("a", 1.0, 1, **odd), scored("b", math.nan, 2, x=3)]),
    }
    for name, (sweep, runs) in cases.items():
        plot(sweep, runs, tmp_path / f"{name}.html")
        assert set(svgs((tmp_path / f"{name}.html").read_text())) == {"progress", "parallel"}
    assert "&lt;b&gt;&amp;" in (tmp_path / "odd.html").read_text()


def test_png_is_written_atomically(tmp_path):
    pytest.importorskip("matplotlib", reason="the .png plot needs matplotlib (nbsweep[plot])")
    path = tmp_path / "sweep.png"
    path.write_bytes(b"old")
    plot(sweep_on(goal="maximize"), thirty_runs(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert list(tmp_path.iterdir()) == [path]


def test_png_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UsageError, match=r"pip install 'nbsweep\[plot\]'"):
        plot(sweep_on(), thirty_runs(), tmp_path / "sweep.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_refuses_other_files_and_missing_folders(tmp_path):
    with pytest.raises(UsageError, match=r"'.*sweep\.svg'.*\.png or \.html") as error:
        plot(sweep_on(), [], tmp_path / "sweep.svg")
    assert error.value.exit_code == 2
    with pytest.raises(UsageError, match=r"cannot write .*No such file"):
        plot(sweep_on(), [], tmp_path / "missing" / "sweep.html")
    assert list(tmp_path.iterdir()) == []


def test_leaderboard_reads_attributes_only():
    source = Path(leaderboard.__file__).read_text(encoding="utf-8")
    assert "local_store" not in source and "import matplotlib" not in source.split("def ")[0]


def test_the_leaderboard_says_why_under_the_table_and_in_json():
    runs = [Run("good", summary={"val_loss": 1.0}), Run("bad", State.FAILED)]
    runs[1].error = "cell 2: ValueError: bad lr"  # the store's RunRecord has it
    lines = leaderboard.table(sweep_on(), runs).splitlines()
    # Right under the table's rows; the totals and the best run stay last.
    assert lines[4] == "run bad failed: cell 2: ValueError: bad lr"
    assert lines[5].startswith("2 runs: ") and lines[6].startswith("best: good")
    shown = {run["run_id"]: run["error"] for run in leaderboard.as_json(sweep_on(), runs)["runs"]}
    assert shown == {"good": None, "bad": "cell 2: ValueError: bad lr"}
