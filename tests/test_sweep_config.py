"""nbsweep.sweeping.configs: a sweep YAML checked as the W&B server would, every problem at once.

Fast: no kernels, no wandb. The corpus tests read ``../shared/corpus/sweeps`` (or
``$NBSWEEP_CORPUS/sweeps``) and skip without it.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import make_notebook

from nbsweep.errors import SweepConfigError, UsageError
from nbsweep.notebook.files import read_notebook
from nbsweep.notebook.parameters import find_parameters
from nbsweep.sweeping.configs.loading import load_sweep_file
from nbsweep.sweeping.configs.parameter_rules import find_warnings
from nbsweep.sweeping.configs.validation import DEFAULT_COMMAND, validate, with_default_command


def check(config, notebook_parameters=None) -> None:
    """What ``nbsweep sweep`` does with ``validate``'s problems."""
    problems = validate(config, notebook_parameters)
    if problems:
        raise SweepConfigError(problems)


REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("NBSWEEP_CORPUS") or REPO_ROOT.parent / "shared" / "corpus")
CORPUS_SWEEPS = CORPUS / "sweeps"

GOOD: dict[str, Any] = {
    "program": "notebooks/digits.ipynb",
    "method": "random",
    "metric": {"name": "val_loss", "goal": "minimize"},
    "parameters": {"learning_rate": {"values": [0.001, 0.01]}},
}


def changed(**changes: Any) -> dict[str, Any]:
    """GOOD with top-level keys replaced; a value of None removes the key."""
    config = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def with_parameter(spec: Any, method: str = "random", name: str = "lr") -> dict[str, Any]:
    return changed(method=method, parameters={name: spec})


def only_problem(config: Any, notebook_parameters: list[str] | None = None) -> str:
    problems = validate(config, notebook_parameters)
    assert len(problems) == 1, problems
    return problems[0]


def digits_parameters() -> list[str]:
    return find_parameters(read_notebook(REPO_ROOT / "notebooks" / "digits.ipynb")).names()


# --- good configs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem
)
def test_repository_sweeps_pass_against_the_digits_notebook(path: Path) -> None:
    loaded = load_sweep_file(path)
    assert validate(loaded.config, digits_parameters()) == []
    assert loaded.enotation_fixes == []
    assert find_warnings(loaded.config) == []
    check(loaded.config, digits_parameters())  # does not raise


def test_the_repository_has_the_three_example_sweeps() -> None:
    names = {path.stem for path in (REPO_ROOT / "sweeps").glob("*.yaml")}
    assert {"digits-random", "digits-grid", "digits-bayes-hyperband"} <= names


@pytest.mark.parametrize(
    "spec",
    [
        {"value": None},
        {"distribution": "constant", "value": [1, 2]},
        {"values": [1, "a", True]},
        {"values": [1, 2], "probabilities": [0.25, 0.75]},
        {"distribution": "categorical_w_probabilities", "values": [1], "probabilities": [1]},
        {"min": 1, "max": 10},
        {"min": 0.1, "max": 1},
        {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
        {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
        {"distribution": "q_log_uniform_values", "min": 1, "max": 1024, "q": 1},
        {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10},
        {"distribution": "log_uniform", "min": -9.2, "max": -6.9},
        {"distribution": "normal"},
        {"distribution": "q_normal", "mu": 10, "sigma": 2.5, "q": 1},
        {"distribution": "log_normal", "mu": 0, "sigma": 0},
        {"distribution": "q_log_normal", "q": 0.5},
        {"distribution": "beta", "a": 2, "b": 5},
        {"distribution": "q_beta", "a": 0.5, "b": 0.5, "q": 0.1},
        {
            "parameters": {
                "beta1": {"values": [0.9, 0.95]},
                "nadam": {"parameters": {"b": {"value": 1}}},
            }
        },
    ],
)
def test_every_kind_of_parameter_passes(spec: dict[str, Any]) -> None:
    assert validate(with_parameter(spec)) == []


def test_a_full_config_passes() -> None:
    config = changed(
        method="bayes",
        metric={"name": "acc", "goal": "maximize", "target": 0.99, "impute": "worst"},
        early_terminate={"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3, "strict": True},
        controller={"type": "local"},
        run_cap=10,
        command=["${env}", "python", "${program}", "--epochs", 3, "${args}"],
        name="n",
        description="d",
        project="p",
        entity="e",
        kind="sweep",
        apiVersion="v1",
        job="j",
        image_uri="u",
    )
    assert validate(config) == []


def test_grid_accepts_what_it_can_enumerate() -> None:
    parameters = {
        "a": {"value": 1},
        "b": {"values": [1, 2]},
        "c": {"min": 1, "max": 4},  # inferred int_uniform, like W&B
        "d": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25},
        "e": {"parameters": {"f": {"values": ["x", "y"]}}},
    }
    assert validate(changed(method="grid", parameters=parameters)) == []


# --- each check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, "the sweep config must be a mapping (method: ..., parameters: ...), got nothing"),
        ([1, 2], "the sweep config must be a mapping (method: ..., parameters: ...), got [1, 2]"),
        (changed(method=None), "method: missing; add method: random, grid or bayes"),
        (
            changed(method="ax"),
            "method: 'ax' is not a W&B search method; use grid, random or bayes",
        ),
        (changed(method="custom"), "method: custom needs a custom scheduler, which nbsweep"),
        (changed(paramters={}), "paramters: unknown key (did you mean 'parameters'?); W&B refuses"),
        (changed(program=["a.py"]), "program: must be text, got ['a.py']"),
        (changed(run_cap=0), "run_cap: must be a whole number above 0, got 0"),
        (changed(run_cap=2.5), "run_cap: must be a whole number above 0, got 2.5"),
        (changed(run_cap=True), "run_cap: must be a whole number above 0, got True"),
        (changed(kind="job"), "kind: must be sweep, got 'job'"),
        (
            changed(controller={"type": "remote"}),
            "controller: must be {type: cloud} or {type: local}",
        ),
        (
            changed(scheduler={"engine": "wandb"}),
            "scheduler: a sweep scheduler runs W&B Launch jobs",
        ),
        (changed(metric="loss"), "metric: must be a mapping like {name: val_loss, goal: minimize}"),
        (changed(metric={"goal": "minimize"}), "metric.name: missing; give the name of a metric"),
        (changed(metric={"name": 3}), "metric.name: must be text, got 3"),
        (
            changed(metric={"name": "a", "goal": "min"}),
            "metric.goal: 'min' is not one of minimize, maximize; use one",
        ),
        (
            changed(metric={"name": "a", "impute": "mean"}),
            "metric.impute: 'mean' is not one of latest",
        ),
        (
            changed(metric={"name": "a", "target": "high"}),
            "metric.target: must be a number, got 'high'",
        ),
        (
            changed(metric={"name": "a", "goals": "max"}),
            "metric.goals: unknown key (did you mean 'goal'?)",
        ),
        (
            changed(method="bayes", metric=None),
            "metric: missing, and bayes search cannot rank runs without it",
        ),
        (
            changed(metric=None, early_terminate={"type": "hyperband", "min_iter": 3}),
            "metric: missing, and hyperband cannot rank runs without it",
        ),
        (
            changed(metrics=[{"name": "a"}, {"name": "b"}]),
            "metrics: several objectives need method: custom, which nbsweep does not run",
        ),
        (changed(parameters=None), "parameters: missing; add the parameters to sweep"),
        (
            changed(parameters={}),
            "parameters: must be a mapping of parameter names to specs, got {}",
        ),
        (changed(parameters=["lr"]), "parameters: must be a mapping of parameter names to specs"),
        (
            changed(command="nbsweep run"),
            "command: must be a list like ['nbsweep', 'run', '${program}', '--', '${args}']",
        ),
        (
            changed(command=["python", None, ["x"], True]),
            "command: items must be text or numbers, not None, ['x'], True",
        ),
    ],
)
def test_top_level_checks(config: Any, expected: str) -> None:
    assert only_problem(config).startswith(expected)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (0.01, ": 0.01 is not a parameter spec; write {value: 0.01} for a fixed value"),
        ({}, ": nothing to sweep; give value, values, min and max, or a distribution"),
        (
            {"value": 1, "values": [1, 2]},
            ".values: a constant parameter takes only value; remove it",
        ),
        ({"values": []}, ".values: must be a non-empty list, got []"),
        ({"values": "abc"}, ".values: must be a non-empty list, got 'abc'"),
        (
            {"distribution": "loguniform", "min": 1, "max": 2},
            ".distribution: 'loguniform' is not a W&B distribution (did you mean 'log_uniform'?)",
        ),
        ({"distribution": ["uniform"]}, ".distribution: ['uniform'] is not a W&B distribution"),
        (
            {"distribution": "uniform", "min": 0},
            ".max: missing; a uniform parameter needs min and max",
        ),
        ({"min": 0.5}, ".max: missing; a uniform parameter needs min and max"),
        (
            {"distribution": "uniform", "min": 0, "max": 1, "q": 2},
            ".q: a uniform parameter takes only min, max; remove it",
        ),
        (
            {"min": 1.0, "max": 0.5},
            ": min 1.0 is not less than max 0.5; min must be the lower bound",
        ),
        ({"min": 3, "max": 3}, ": min 3 is not less than max 3"),
        (
            {"distribution": "log_uniform_values", "min": 0, "max": 1},
            ".min: must be above 0, as log_uniform_values samples its values on a log scale",
        ),
        (
            {"distribution": "inv_log_uniform_values", "min": -1.0, "max": 1.0},
            ".min: must be above 0",
        ),
        (
            {"distribution": "int_uniform", "min": 1, "max": 8.5},
            ".max: 8.5 is not a whole number; int_uniform needs int bounds written without a dot",
        ),
        (
            {"distribution": "uniform", "min": "1e-5", "max": 0.1},
            ".min: '1e-5' is text, not a number; write it unquoted as 1.0e-5",
        ),
        (
            {"distribution": "uniform", "min": 0, "max": "1e5"},
            ".max: '1e5' is text, not a number; write it unquoted as 1.0e+5",
        ),
        ({"distribution": "uniform", "min": 0, "max": "big"}, ".max: must be a number, got 'big'"),
        ({"distribution": "uniform", "min": 0, "max": True}, ".max: must be a number, got True"),
        (
            {"distribution": "uniform", "min": 0, "max": float("inf")},
            ".max: must be a finite number, got inf",
        ),
        ({"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}, ".q: must be above 0"),
        ({"distribution": "normal", "sigma": -1}, ".sigma: must be 0 or more, got -1"),
        ({"distribution": "beta", "a": -0.5}, ".a: must be 0 or more, got -0.5"),
        (
            {"distribution": "normal", "min": 0},
            ".min: a normal parameter takes only mu, sigma; remove it",
        ),
        (
            {"values": [1, 2], "probabilities": [1.0]},
            ".probabilities: 1 probabilities for 2 values; give one per value",
        ),
        (
            {"values": [1, 2], "probabilities": [0.5, 0.6]},
            ".probabilities: add up to 1.1, not 1; scale them to sum to 1",
        ),
        (
            {"values": [1, 2], "probabilities": [1.5, -0.5]},
            ".probabilities: must be a list of numbers 0 or more",
        ),
        (
            {"distribution": "categorical", "values": [1], "probabilities": [1]},
            ".probabilities: a categorical parameter takes only values; remove it",
        ),
        ({"parameters": {}}, ".parameters: must be a mapping of parameter names to specs, got {}"),
        (
            {"parameters": {"a": {"value": 1}}, "value": 2},
            ": a nested group has only parameters, not value; move them inside",
        ),
        (
            {"parameters": {"beta": {"min": 2, "max": 1}}},
            ".parameters.beta: min 2 is not less than max 1",
        ),
    ],
)
def test_parameter_checks(spec: Any, expected: str) -> None:
    assert only_problem(with_parameter(spec)).startswith(f"parameters.lr{expected}")


def test_parameter_names_follow_the_schema_pattern() -> None:
    assert validate(with_parameter({"value": 1}, name="model.lr-max_2")) == []
    problem = only_problem(with_parameter({"value": 1}, name="2lr"))
    assert problem == "parameters.2lr: not a parameter name; use letters, digits, _, . and - only"


def test_inferred_distribution_follows_the_bounds_types() -> None:
    # Whole-number bounds are int_uniform (grid can enumerate it); a float makes it uniform.
    assert validate(with_parameter({"min": 1, "max": 3}, method="grid")) == []
    problem = only_problem(with_parameter({"min": 1, "max": 3.0}, method="grid"))
    assert problem.startswith("method: grid cannot enumerate parameters.lr (uniform); give each")


def test_grid_names_every_parameter_it_cannot_enumerate() -> None:
    parameters = {
        "a": {"values": [1]},
        "b": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "g": {"parameters": {"c": {"distribution": "normal"}}},
        "d": {"values": [1, 2], "probabilities": [0.5, 0.5]},
    }
    assert only_problem(changed(method="grid", parameters=parameters)) == (
        "method: grid cannot enumerate parameters.b (log_uniform_values), "
        "parameters.g.parameters.c (normal), parameters.d (categorical_w_probabilities); "
        "give each a values list (or int_uniform, q_uniform), or use method random or bayes"
    )


@pytest.mark.parametrize(
    ("early_terminate", "expected"),
    [
        ("hyperband", ": must be a mapping like {type: hyperband}, got 'hyperband'"),
        ({"min_iter": 3}, ".type: missing; W&B's one kind is type: hyperband"),
        ({"type": "median", "min_iter": 3}, ".type: 'median' is not supported"),
        (
            {"type": "hyperband"},
            ": give min_iter (the first step to stop runs at), or max_iter and s",
        ),
        ({"type": "hyperband", "max_iter": 27}, ": give min_iter"),
        ({"type": "hyperband", "min_iter": 0}, ".min_iter: must be a whole number above 0, got 0"),
        ({"type": "hyperband", "min_iter": 2.5}, ".min_iter: must be a whole number above 0"),
        ({"type": "hyperband", "max_iter": 27, "s": 1.5}, ".s: must be a whole number above 0"),
        ({"type": "hyperband", "min_iter": 3, "eta": 1}, ".eta: must be a number above 1, got 1"),
        ({"type": "hyperband", "min_iter": 3, "strict": "yes"}, ".strict: must be true or false"),
        (
            {"type": "hyperband", "min_iter": 3, "min_iters": 3},
            ".min_iters: unknown key (did you mean 'min_iter'?)",
        ),
    ],
)
def test_early_terminate_checks(early_terminate: Any, expected: str) -> None:
    problem = only_problem(changed(early_terminate=early_terminate))
    assert problem.startswith(f"early_terminate{expected}")


def test_every_problem_is_reported_at_once() -> None:
    config = {
        "method": "bayes",
        "metric": {"name": "loss", "goal": "lowest"},
        "parameters": {
            "lr": {"distribution": "log_uniform_values", "min": 0.1, "max": 0.01},
            "layers": {"values": []},
            "optimizer": {"parameters": {"momentum": {"distribution": "uniform", "min": "0"}}},
        },
        "run_cap": -1,
        "early_terminate": {"type": "hyperband"},
    }
    problems = validate(config)
    assert len(problems) == 7, problems
    with pytest.raises(SweepConfigError) as raised:
        check(config)
    error = raised.value
    assert isinstance(error, UsageError)
    assert error.exit_code == 2
    assert error.problems == problems
    lines = str(error).splitlines()
    assert lines[0] == "sweep config has 7 problems:"
    assert lines[1:] == [f"  - {problem}" for problem in problems]
    assert "  - parameters.optimizer.parameters.momentum.max: missing;" in str(error)


def test_one_problem_is_said_in_the_singular() -> None:
    with pytest.raises(
        SweepConfigError, match=r"^sweep config has 1 problem:\n  - method: missing"
    ):
        check(changed(method=None))


def random_config(rng: random.Random) -> dict[Any, Any]:
    """A config of odd shapes: the keys W&B knows, holding values of any type."""
    odd = [None, 0, -1, 2.5, float("nan"), True, "", "1e-5", [], [None], {}, {"a": 1}, {1: 2}]
    spec_keys = ["value", "values", "distribution", "min", "max", "q", "sigma", "probabilities"]
    distributions = ["uniform", "int_uniform", "categorical_w_probabilities", "log_uniform", "x"]

    def spec(depth: int) -> Any:
        if rng.random() < 0.1:
            return rng.choice(odd)
        result: dict[Any, Any] = {}
        for key in rng.sample(spec_keys, rng.randint(0, 4)):
            pool = distributions + odd if key == "distribution" else odd
            result[key] = rng.choice(pool)
        if depth < 2 and rng.random() < 0.2:
            result["parameters"] = {rng.choice(["a", "b.c", "1x", 5]): spec(depth + 1)}
        return result

    top = ["method", "metric", "early_terminate", "command", "run_cap", "controller", "metrics"]
    config: dict[Any, Any] = {key: rng.choice(odd) for key in rng.sample(top, rng.randint(0, 4))}
    if rng.random() < 0.8:
        config["method"] = rng.choice(["grid", "random", "bayes", "custom", *odd])
    config["parameters"] = {rng.choice(["lr", "a.b", 3]): spec(0) for _ in range(3)}
    return config


def test_odd_configs_give_messages_never_exceptions() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        config = random_config(rng)
        problems = validate(config, rng.choice([None, [], ["lr", "a"]]))
        assert all(isinstance(problem, str) for problem in problems), config
        assert all(isinstance(warning, str) for warning in find_warnings(config)), config


# --- the notebook's parameters -----------------------------------------------------------


def test_unknown_notebook_parameter_gets_a_suggestion() -> None:
    config = changed(parameters={"learning_rat": {"values": [0.1]}, "epochs": {"value": 3}})
    assert only_problem(config, digits_parameters()) == (
        "parameters.learning_rat: the notebook has no parameter 'learning_rat' "
        "(did you mean 'learning_rate'?); its parameters are: learning_rate, hidden_units, "
        "alpha, epochs, batch_size, seed"
    )


def test_nested_groups_are_checked_as_dotted_names() -> None:
    names = find_parameters(read_notebook(REPO_ROOT / "notebooks" / "blog_style.ipynb")).names()
    good = {"optimizer": {"parameters": {"beta1": {"values": [0.9, 0.99]}}}}
    assert validate(changed(parameters=good), names) == []
    assert validate(changed(parameters={"optimizer.beta1": {"value": 0.9}}), names) == []
    # A whole group at once is injected as a dict, merged into the notebook's.
    assert validate(changed(parameters={"optimizer": {"value": {"beta1": 0.5}}}), names) == []
    bad = {"optimizer": {"parameters": {"beta": {"values": [0.9]}}}}
    assert only_problem(changed(parameters=bad), names).startswith(
        "parameters.optimizer.parameters.beta: the notebook has no parameter 'optimizer.beta' "
        "(did you mean 'optimizer.beta1'?)"
    )


def test_keys_inside_a_parameter_with_an_opaque_default_pass() -> None:
    nb = make_notebook([("model = build_model()\nlr = 0.1", ["parameters"])])
    names = find_parameters(nb).names()
    assert names == ["model", "lr"]
    group = {"model": {"parameters": {"depth": {"values": [2, 4]}}}, "model.width": {"value": 8}}
    assert validate(changed(parameters=group), names) == []
    assert only_problem(changed(parameters={"modl.depth": {"value": 2}}), names).startswith(
        "parameters.modl.depth: the notebook has no parameter 'modl.depth'"
    )


def test_without_notebook_parameters_names_are_not_checked() -> None:
    assert validate(changed(parameters={"anything": {"value": 1}})) == []
    assert only_problem(changed(parameters={"anything": {"value": 1}}), []).endswith(
        "its parameters are: none"
    )


# --- loading and e-notation --------------------------------------------------------------


def test_enotation_is_read_as_numbers_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    text = (
        "method: random\n"
        "parameters:\n"
        "  lr: {distribution: log_uniform_values, min: 1e-5, max: 1.0e-2}\n"
        "  wd: {values: [1e-4, 0.001, '1e-3']}\n"
    )
    path.write_text(text)
    loaded = load_sweep_file(path)
    assert loaded.text == text
    assert loaded.config["parameters"]["lr"] == {
        "distribution": "log_uniform_values",
        "min": 1e-5,
        "max": 1e-2,
    }
    assert loaded.enotation_fixes == [
        "parameters.lr.min: '1e-5' read as 1e-05",
        "parameters.wd.values[0]: '1e-4' read as 0.0001",
    ]
    assert validate(loaded.config) == []
    # The quoted '1e-3' stays text: a warning, not an error (W&B passes text values on).
    assert find_warnings(loaded.config) == [
        "parameters.wd: '1e-3' is text, so the notebook gets a string; for a boolean, None or "
        "a number write true, false, null or 1.0e-5 unquoted"
    ]
    # What PyYAML's default loader (and so `wandb sweep`) makes of the same file:
    assert only_problem(yaml.safe_load(text)).startswith(
        "parameters.lr.min: '1e-5' is text, not a number; write it unquoted as 1.0e-5"
    )


def test_no_fixes_when_the_loaders_agree(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("method: grid\nparameters:\n  a: {values: [1.0e-5, .nan, 1e-5x]}\n")
    assert load_sweep_file(path).enotation_fixes == []


def test_unreadable_or_invalid_yaml_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read sweep file"):
        load_sweep_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [grid\n")
    with pytest.raises(UsageError, match=r"sweep file .*bad.yaml' is not valid YAML \(line"):
        load_sweep_file(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert validate(load_sweep_file(empty).config) == [
        "the sweep config must be a mapping (method: ..., parameters: ...), got nothing "
        "(an empty file)"
    ]


# --- default command and warnings --------------------------------------------------------


def test_with_default_command_adds_nbsweeps_command() -> None:
    config = changed()
    result = with_default_command(config)
    assert result["command"] == ["nbsweep", "run", "${program}", "--", "${args}"]
    assert list(DEFAULT_COMMAND) == result["command"]
    assert "command" not in config
    result["parameters"]["learning_rate"]["values"].append(1)
    assert GOOD["parameters"]["learning_rate"]["values"] == [0.001, 0.01]


def test_with_default_command_keeps_the_users_command() -> None:
    config = changed(command=["python", "${program}", "${args_json}"])
    assert with_default_command(config) == config


def test_legacy_log_uniform_is_accepted_with_a_warning() -> None:
    exponents = with_parameter({"distribution": "log_uniform", "min": -9.2, "max": -6.9})
    assert validate(exponents) == []
    assert find_warnings(exponents) == [
        "parameters.lr: log_uniform is deprecated (min -9.2 and max -6.9 are natural-log "
        "exponents: it samples 0.000101..0.00101); W&B suggests log_uniform_values instead"
    ]
    values = with_parameter({"distribution": "log_uniform", "min": 1e-7, "max": 1e-3})
    assert validate(values) == []
    assert find_warnings(values) == [
        "parameters.lr: log_uniform's min 1e-07 and max 0.001 are natural-log exponents: it "
        "samples 1..1; if you meant these values, use log_uniform_values"
    ]
    inverse = with_parameter({"distribution": "inv_log_uniform", "min": 0, "max": 2})
    assert "it samples 0.135..1" in find_warnings(inverse)[0]


def test_text_that_looks_typed_is_warned_about() -> None:
    config = with_parameter({"values": ["true", "False", "None", "2e-3", "none", "adam", 1]})
    assert find_warnings(config) == [
        "parameters.lr: 'true', 'False', 'None', '2e-3' are text, so the notebook gets a "
        "string; for a boolean, None or a number write true, false, null or 1.0e-5 unquoted"
    ]
    assert find_warnings(with_parameter({"values": [True, None, 2e-3, "yes"]})) == []


def test_warnings_never_fail_on_broken_configs() -> None:
    for config in (None, [], {"parameters": 3}, {"parameters": {"a": 1, "b": {"min": "x"}}}):
        assert find_warnings(config) == []


# --- the shared corpus -------------------------------------------------------------------

# The files VALIDATION.txt and INDEX.tsv call invalid, and the message that must name why.
CORPUS_REJECTED = {
    "spokenlanguage__platalea__wandb_sweep.yaml": [
        "metric.goal: 'hello world wrt wandb sweep function' is not one of minimize, maximize",
    ],
    "wandb__launch-jobs__wandb_scheduler-basic.yaml": ["method: missing"],
    "wandb__sweeps__sweep-ax-moo.yaml": [
        "method: 'ax' is not a W&B search method",
        "metrics: several objectives need method: custom",
        "metric_constraints: unknown key",
    ],
    "konst-int-i__healnet__sweep.yaml": [
        "method: grid cannot enumerate parameters.model_params.weight_decay (uniform), "
        "parameters.model_params.attn_dropout (uniform)",
        "parameters.model_params.max_freq.min: 2.0 is not a whole number; int_uniform needs int",
    ],
}
# Files PyYAML's default loader makes invalid ('1e-5' bounds as text) that nbsweep reads fine.
CORPUS_ENOTATION_RESCUED = {
    "czbiohub-sf__ulc-malaria-autofocus__sweep.yaml": "parameters.learning_rate.min: '1e-7'",
    "ultralytics__yolov5__sweep.yaml": "parameters.lr0.min: '1e-5' read as 1e-05",
    "wandb__edu__mlops-001-lesson2-sweep.yaml": "parameters.lr.min: '1e-5' read as 1e-05",
}
# Files where only values lists (or a fixed value) change: valid both ways, numbers only ours.
CORPUS_ENOTATION_IN_VALUES = {
    "JetBrains-Research__docs-fine-tuning__sweep_config.yaml": "learning_rate.values[0]: '1e-5'",
    "MolecularAI__uq4dd__base_mve.yaml": "model.optimizer.lr.values[0]: '1e-3' read as 0.001",
    "reeceomahoney__locodiff__sweep.yaml": "train_steps.value: '1e5' read as 100000.0",
    "rpatrik96__nl-causal-representations__sweep.yaml": "model.qr.values[0]: '1e-3' read as 0.001",
}
CORPUS_LEGACY_LOG_UNIFORM = {
    "MilesCranmer__pysr_wandb__sweep.yaml": 4,
    "borisdayma__dalle-mini__seq2seq-sweep.yaml": 1,
    "borisdayma__dalle-mini__tools-train-sweep.yaml": 1,
}


def corpus_files() -> list[Path]:
    return sorted(CORPUS_SWEEPS.glob("*.yaml")) if CORPUS_SWEEPS.is_dir() else []


needs_corpus = pytest.mark.skipif(
    not CORPUS_SWEEPS.is_dir(), reason=f"shared sweep corpus not found at {CORPUS_SWEEPS}"
)


def corpus_file(name: str) -> Path:
    path = CORPUS_SWEEPS / name
    if not path.is_file():
        pytest.skip(f"{name} is not in the corpus at {CORPUS_SWEEPS}")
    return path


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("path", corpus_files(), ids=lambda path: path.stem)
def test_corpus_file_is_accepted_or_rejected_with_messages(path: Path) -> None:
    loaded = load_sweep_file(path)
    problems = validate(loaded.config)
    assert all(isinstance(problem, str) and "\n" not in problem for problem in problems)
    assert all(isinstance(warning, str) for warning in find_warnings(loaded.config))
    try:
        check(loaded.config)
    except SweepConfigError as error:
        assert error.problems == problems
    else:
        assert problems == []
    expected_rejection = path.name in CORPUS_REJECTED
    assert bool(problems) == expected_rejection, problems


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_REJECTED))
def test_corpus_invalid_files_are_rejected_naming_the_problem(name: str) -> None:
    problems = validate(load_sweep_file(corpus_file(name)).config)
    for expected in CORPUS_REJECTED[name]:
        assert any(problem.startswith(expected) for problem in problems), (expected, problems)


@pytest.mark.corpus
@needs_corpus
def test_corpus_notes_call_the_same_files_invalid() -> None:
    index = CORPUS_SWEEPS / "INDEX.tsv"
    with index.open(encoding="utf-8", newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}
    marked_invalid = {name for name, row in rows.items() if "INVALID" in row["notes"]}
    assert marked_invalid <= set(CORPUS_REJECTED)
    assert set(CORPUS_REJECTED) <= set(rows)
    rows_by_method = {name: row["method"] for name, row in rows.items()}
    assert rows_by_method["wandb__sweeps__sweep-ax-moo.yaml"] == "ax"
    assert rows_by_method["wandb__launch-jobs__wandb_scheduler-basic.yaml"].startswith("(missing")
    validation = (CORPUS_SWEEPS / "VALIDATION.txt").read_text(encoding="utf-8")
    kept_invalid = validation.split("Clearly invalid", 1)[1].split("\n\n", 1)[0]
    for word in ("platalea", "sweep-ax-moo", "launch-jobs", "healnet"):
        assert word in kept_invalid


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_ENOTATION_RESCUED))
def test_corpus_enotation_bounds_are_accepted_and_reported(name: str) -> None:
    loaded = load_sweep_file(corpus_file(name))
    assert validate(loaded.config) == []
    expected = CORPUS_ENOTATION_RESCUED[name]
    assert any(fix.startswith(expected) for fix in loaded.enotation_fixes), loaded.enotation_fixes
    # Read the way `wandb sweep` reads it, the file is invalid, and the message says the fix.
    problems = validate(yaml.safe_load(loaded.text))
    assert problems
    assert all("is text, not a number; write it unquoted as" in problem for problem in problems)


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_ENOTATION_IN_VALUES))
def test_corpus_enotation_in_values_is_reported(name: str) -> None:
    loaded = load_sweep_file(corpus_file(name))
    assert validate(loaded.config) == []
    expected = f"parameters.{CORPUS_ENOTATION_IN_VALUES[name]}"
    assert any(fix.startswith(expected) for fix in loaded.enotation_fixes), loaded.enotation_fixes
    assert validate(yaml.safe_load(loaded.text)) == []  # text values are valid, just not numbers


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_LEGACY_LOG_UNIFORM))
def test_corpus_legacy_log_uniform_is_valid_with_warnings(name: str) -> None:
    config = load_sweep_file(corpus_file(name)).config
    assert validate(config) == []
    legacy = [
        warning for warning in find_warnings(config) if "log_uniform is deprecated" in warning
    ]
    assert len(legacy) == CORPUS_LEGACY_LOG_UNIFORM[name], legacy


@pytest.mark.corpus
@needs_corpus
def test_corpus_nested_groups_pass_as_dotted_names() -> None:
    config = load_sweep_file(corpus_file("wandb__sweeps__sweep-nested-cli.yaml")).config
    assert validate(config, ["batch_size", "optimizer.lr", "optimizer.nadam.beta"]) == []
    assert validate(config, ["batch_size", "optimizer"]) == []  # an opaque optimizer default
    problems = validate(config, ["batch_size", "optimizer.lr", "optimizer.nadam.gamma"])
    assert problems == [
        "parameters.optimizer.parameters.nadam.parameters.beta: the notebook has no parameter "
        "'optimizer.nadam.beta' (did you mean 'optimizer.nadam.gamma'?); its parameters are: "
        "batch_size, optimizer.lr, optimizer.nadam.gamma"
    ]


@pytest.mark.corpus
@needs_corpus
@pytest.mark.parametrize("path", corpus_files(), ids=lambda path: path.stem)
def test_corpus_verdicts_agree_with_the_wandb_schema(path: Path) -> None:
    """Where the JSON schema alone decides, W&B's own schema gives the same verdict."""
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = CORPUS_SWEEPS / "_reference" / "wandb-sweeps-schema.json"
    if not schema_path.is_file():
        pytest.skip(f"no reference schema at {schema_path}")
    # W&B's format checkers: "integer" means a Python int, "float" a Python float.
    formats = jsonschema.FormatChecker()
    formats.checks("integer")(lambda value: isinstance(value, int))
    formats.checks("float")(lambda value: isinstance(value, float))
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema, format_checker=formats)
    config = load_sweep_file(path).config
    schema_errors = [error.message for error in validator.iter_errors(config)]
    assert bool(schema_errors) == bool(validate(config)), schema_errors
