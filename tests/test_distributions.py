"""Every distribution W&B documents, through the local engine and through a real agent: the
notebook gets plain Python numbers of the type a user expects (issue 19: the engine samples
with numpy, and an ``int64`` from a ``q_*`` distribution killed the agent in the store)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import CliRun, write_notebook

from nbsweep.sweeping.configs.parameter_rules import GRID_DISTRIBUTIONS
from nbsweep.sweeping.configs.validation import validate

pytest.importorskip("sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'")

from nbsweep.local.engine import Engine  # after the skip: it needs the engine


def between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high


def steps_of(q: float, low: float = -math.inf, high: float = math.inf) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high and math.isclose(value / q, round(value / q))


CATEGORIES = [16, 0.5, "adam"]


def categorical(value: Any) -> bool:
    """One of the values, as given: the same type too (16 is not 16.0)."""
    return any(value == given and type(value) is type(given) for given in CATEGORIES)


# name (dotted: in the nested group) -> (spec, the type the notebook should get, its range).
# A q_* value is an int when q and the bounds (or mu and sigma) are all ints, else a float.
TABLE: dict[str, tuple[dict[str, Any], type | None, Callable[[Any], bool]]] = {
    "constant": ({"value": 7}, int, lambda value: value == 7),
    "categorical": ({"values": CATEGORIES}, None, categorical),
    "int_uniform": ({"distribution": "int_uniform", "min": 1, "max": 5}, int, between(1, 5)),
    "uniform": ({"distribution": "uniform", "min": 0, "max": 1}, float, between(0, 1)),
    "q_uniform": (
        {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
        int,
        steps_of(2, 0, 10),
    ),
    "q_uniform_mixed": (
        {"distribution": "q_uniform", "min": 0.0, "max": 10.0, "q": 2},
        float,
        steps_of(2, 0, 10),
    ),
    "log_uniform": (
        {"distribution": "log_uniform", "min": -3, "max": 0},
        float,
        between(math.exp(-3), 1),
    ),
    "log_uniform_values": (
        {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
        float,
        between(1e-4, 0.1),
    ),
    "q_log_uniform": (
        {"distribution": "q_log_uniform", "min": 0, "max": 3, "q": 1},
        int,
        between(1, 20),
    ),
    "q_log_uniform_values": (  # W&B's PyTorch tutorial's batch_size
        {"distribution": "q_log_uniform_values", "q": 8, "min": 32, "max": 256},
        int,
        steps_of(8, 32, 256),
    ),
    "inv_log_uniform": (
        {"distribution": "inv_log_uniform", "min": 0, "max": 3},
        float,
        between(math.exp(-3), 1),
    ),
    "inv_log_uniform_values": (
        {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10},
        float,
        between(0.1, 10),
    ),
    "normal": ({"distribution": "normal", "mu": 0, "sigma": 1}, float, between(-10, 10)),
    "q_normal": ({"distribution": "q_normal", "mu": 10, "sigma": 2, "q": 1}, int, between(-10, 30)),
    "log_normal": ({"distribution": "log_normal", "mu": 0, "sigma": 1}, float, between(0, 1e5)),
    "q_log_normal": (
        {"distribution": "q_log_normal", "mu": 1, "sigma": 0.5, "q": 0.5},
        float,
        steps_of(0.5, 0, 1e5),
    ),
    "beta": ({"distribution": "beta", "a": 2, "b": 2}, float, between(0, 1)),
    "q_beta": ({"distribution": "q_beta", "a": 2, "b": 2, "q": 0.25}, float, steps_of(0.25, 0, 1)),
    "model.batch_size": (
        {"distribution": "q_log_uniform_values", "q": 8, "min": 32, "max": 256},
        int,
        steps_of(8, 32, 256),
    ),
    "model.activation": (
        {"values": ["relu", "tanh"]},
        str,
        lambda value: value in ("relu", "tanh"),
    ),
}


def parameters(names: list[str]) -> dict[str, Any]:
    """The sweep's ``parameters:`` for these rows, dotted ones in a nested group."""
    nested: dict[str, Any] = {}
    for name in names:
        *groups, leaf = name.split(".")
        level = nested
        for group in groups:
            level = level.setdefault(group, {"parameters": {}})["parameters"]
        level[leaf] = TABLE[name][0]
    return nested


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    leaves: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping):
            leaves.update(flat(value, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = value
    return leaves


def wrong(values: Mapping[str, Any]) -> list[str]:
    """Each value whose type or range is not what its row says, with why."""
    problems = []
    for name, value in flat(values).items():
        _, expected, in_range = TABLE[name]
        if expected is not None and type(value) is not expected:
            problems.append(f"{name}: {value!r} is a {type(value).__name__}, not {expected}")
        elif not in_range(value):
            problems.append(f"{name}: {value!r} is out of range")
    return problems


@dataclass
class FakeRun:
    run_id: str
    values: dict[str, Any]
    summary: dict[str, Any]
    state: str = "finished"
    history: list[dict[str, Any]] = field(default_factory=list)


def distribution(spec: dict[str, Any]) -> str:
    """The distribution named, else the one W&B infers (enough for this table)."""
    if "distribution" in spec:
        return spec["distribution"]
    return "constant" if "value" in spec else "categorical"


def proposals(method: str, names: list[str], count: int) -> list[dict[str, Any]]:
    """``count`` proposals as the engine gives them, each fed back as a finished run (through
    JSON, as the store keeps it) so that bayes fits on them."""
    engine = Engine(
        {"method": method, "metric": {"name": "score"}, "parameters": parameters(names)}
    )
    assert engine.problems() == []
    proposed: list[dict[str, Any]] = []
    runs: list[FakeRun] = []
    for index in range(count):
        values = engine.propose(runs)
        assert values is not None
        proposed.append(values)
        runs.append(FakeRun(f"r{index}", json.loads(json.dumps(values)), {"score": index}))
    return proposed


@pytest.mark.parametrize("method", ["random", "bayes", "grid"])
def test_every_distribution_gives_plain_python_values_of_the_expected_type(method: str) -> None:
    names = list(TABLE)
    if method == "grid":
        names = [name for name in names if distribution(TABLE[name][0]) in GRID_DISTRIBUTIONS]
    # Checked as proposed, before any JSON: `type(...) is float` also refuses numpy.float64.
    seen = proposals(method, names, count=12)
    assert all(set(flat(values)) == set(names) for values in seen)
    assert [problem for values in seen for problem in wrong(values)] == []


@pytest.mark.parametrize("name", list(TABLE))
def test_dry_run_and_the_engine_agree_on_each_distribution(name: str) -> None:
    """What ``nbsweep sweep --dry-run`` calls valid the local engine runs: random and bayes
    take every distribution (the deprecated natural-log ones too, as W&B does, with a
    warning); a grid only the ones W&B's grid can enumerate, and dry-run says so."""
    # int_uniform beside it: bayes needs a parameter to search, and a constant is none.
    names = list(dict.fromkeys([name, "int_uniform"]))
    for method in ("random", "bayes", "grid"):
        config = {"method": method, "metric": {"name": "score"}, "parameters": parameters(names)}
        refused = validate(config)
        engine = Engine(config)
        assert engine.problems() == []
        try:
            proposed = engine.propose([])
        except ValueError:
            proposed = None
        assert (proposed is None) == bool(refused), (method, refused, proposed)
        assert (method == "grid" and distribution(TABLE[name][0]) not in GRID_DISTRIBUTIONS) == (
            bool(refused)
        )


NOTEBOOK_TOP = sorted({name.split(".")[0] for name in TABLE})


def notebook(path: Path) -> Path:
    """Every parameter None (no default to coerce a value's type), then a cell that writes
    what it got, each value with its Python type, one JSON line per trial."""
    defaults = "\n".join(
        f"{name} = {{'batch_size': None, 'activation': None}}"
        if name == "model"
        else f"{name} = None"
        for name in NOTEBOOK_TOP
    )
    record = (
        "import json, nbsweep\n"
        f"got = {{name: globals()[name] for name in {NOTEBOOK_TOP!r}}}\n"
        "def flat(values, prefix=''):\n"
        "    out = {}\n"
        "    for name, value in values.items():\n"
        "        if isinstance(value, dict):\n"
        "            out.update(flat(value, prefix + name + '.'))\n"
        "        else:\n"
        "            out[prefix + name] = [type(value).__name__, value]\n"
        "    return out\n"
        "with open('seen.jsonl', 'a') as file:\n"
        "    file.write(json.dumps(flat(got)) + '\\n')\n"
        "nbsweep.log({'score': q_log_uniform_values / 8})"
    )
    return write_notebook(path, [(defaults, ["parameters"]), record])


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "store.db")


@pytest.mark.kernel
def test_a_local_sweep_of_every_distribution_runs_on_either_store(
    tmp_path: Path, store: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    cli = CliRun(tmp_path, env={**env, "HOME": str(tmp_path), "NBSWEEP_STORE": store})
    try:
        notebook(tmp_path / "nb.ipynb")
        config = {
            "program": "nb.ipynb",
            "method": "bayes",  # its second proposal reads the first run back from the store
            "metric": {"name": "score", "goal": "maximize"},
            "run_cap": 2,
            "parameters": parameters(list(TABLE)),
        }
        (tmp_path / "sweep.yaml").write_text(json.dumps(config))  # JSON is YAML
        assert cli("sweep", "--dry-run", "sweep.yaml").returncode == 0
        created = cli("sweep", "--local", "sweep.yaml")
        assert created.returncode == 0, created.stderr
        sweep_id = created.stdout.split()[3]

        agent = cli("agent", f"local:{sweep_id}", "--no-wandb")
        assert agent.returncode == 0, agent.stderr[-3000:]

        status = cli("status", f"local:{sweep_id}", "--json")
        assert status.returncode == 0, status.stderr
        runs = json.loads(status.stdout)["runs"]
        assert [run["state"] for run in runs] == ["finished", "finished"]
        seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
        assert len(seen) == 2
        for run in runs:
            stored = flat(run["values"])
            assert wrong(stored) == []
            # The notebook saw what the store keeps, type and all; the agent's log says it (repr:
            # 2 or 2.0).
            got = next(got for got in seen if {k: v for k, (_, v) in got.items()} == stored)
            assert {k: kind for k, (kind, _) in got.items()} == {
                k: type(v).__name__ for k, v in stored.items()
            }
            said = next(
                line
                for line in agent.stderr.splitlines()
                if line.startswith(f"run {run['run_id']}: ")
            )
            top = {k: v for k, v in run["values"].items() if not isinstance(v, dict)}
            assert all(f"{k}={v!r}" in said for k, v in top.items()), said
    finally:
        cli.finish(timeout=10)


ENGINE_IMPORTS = """
import json, sys
from nbsweep.local.engine import Engine
config = {"method": sys.argv[1], "metric": {"name": "score"},
          "parameters": {"a": {"values": [1, 2]}, "b": {"min": 0.0, "max": 1.0}}}
if sys.argv[1] == "grid":
    config["parameters"]["b"] = {"values": [0.5]}
engine = Engine(config)
checked = engine.problems()
before = type(sys.modules["scipy.stats"]).__name__
engine.load_search()
loaded = type(sys.modules["scipy.stats"]).__name__
values = engine.propose([])
print(json.dumps({"checked": checked, "before": before, "values": values, "stats": loaded,
                  "sklearn": "sklearn" in sys.modules}))
"""


@pytest.mark.parametrize("method", ["grid", "random", "bayes"])
def test_the_engine_imports_only_what_its_search_uses(method: str) -> None:
    """Checking a config and running a grid leave ``scipy.stats`` unloaded (most of the
    engine's start), and scikit-learn comes only with bayes; a search that samples loads
    ``scipy.stats`` before its first hand-out (the store's lock is held then)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", ENGINE_IMPORTS, method],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["checked"] == [] and seen["before"] == "_DeferredModule"
    assert set(seen["values"]) == {"a", "b"}
    assert seen["stats"] == ("_DeferredModule" if method == "grid" else "module")
    assert seen["sklearn"] is (method == "bayes")


def test_a_deferred_module_reads_as_the_module_once_loaded() -> None:
    """``import scipy.stats`` and ``from scipy.stats import norm`` work with the stand-in in
    place, and give the real module's objects."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nbsweep.local.engine import load_engine\n"
        "load_engine()\n"
        "import scipy.stats\n"
        "stand_in = scipy.stats\n"
        "from scipy.stats import norm\n"
        "import scipy.stats.distributions\n"
        "real = sys.modules['scipy.stats']\n"
        "print(type(stand_in).__name__, type(real).__name__, stand_in.norm is norm is real.norm)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["_DeferredModule", "module", "True"]
