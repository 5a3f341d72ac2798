"""The helpers that replaced meanings written twice: each one rule, kept as it was."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest

from nbsweep.formatting import format_value
from nbsweep.kernel.api import TRIAL_ENV
from nbsweep.kernel.environment import trial_environment, trial_variables
from nbsweep.notebook.parameters import is_dict_call, is_dict_expression
from nbsweep.notebook.wandb_way import calls_wandb_init, first_wandb_init_cell
from nbsweep.status import EndReason
from nbsweep.trial.run import exit_code_for_stop
from nbsweep.trial.spec import html_path


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


@pytest.mark.parametrize(
    ("sources", "opens"),
    [
        (("import wandb", "run = wandb.init(project='p')"), True),
        (("import wandb as wb", "wb.init()"), True),
        (("from wandb import init as start", "def f():\n    start()"), True),
        (("import wandb", "def train():\n    wandb.init()"), True),
        (("import wandb", "wandb.log({'a': 1})"), False),
        (("import wb", "wb.init()"), False),
        (("x = 1",), False),
    ],
)
def test_wandb_init_is_found_under_any_name_an_import_gives_it(
    sources: tuple[str, ...], opens: bool
) -> None:
    nb = _notebook(*sources)
    assert calls_wandb_init(nb) is opens
    assert (first_wandb_init_cell(nb) == len(sources) - 1) is opens  # the one rule, by cell


@pytest.mark.parametrize(
    ("source", "call", "expression"),
    [
        ("dict(a=1, b=2)", True, True),
        ("dict()", True, True),
        ("dict(**other)", False, False),
        ("dict([('a', 1)])", False, False),
        ("{'a': 1}", False, True),
        ("{**other, 'a': 1}", False, False),
        ("make(a=1)", False, False),
    ],
)
def test_one_dict_detector(source: str, call: bool, expression: bool) -> None:
    node = ast.parse(source, mode="eval").body
    assert is_dict_call(node) is call
    assert is_dict_expression(node) is expression


def test_one_number_format() -> None:
    assert format_value(0.123456789) == "0.1235"
    assert format_value(0.123456789, 6) == "0.123457"
    assert format_value(3) == "3"
    assert format_value("a b") == "'a b'"
    assert format_value("") == "''"
    assert format_value("adam") == "adam"
    assert format_value("a b", 6, quote=False) == "a b"


def test_one_trial_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBSWEEP_TEST_OUTER", "outer")
    assert trial_variables({"A": "1"}) == {"A": "1", TRIAL_ENV: "1"}
    assert trial_variables() == {TRIAL_ENV: "1"}
    environ = trial_environment({"A": "1", TRIAL_ENV: "0"})
    assert environ == {**os.environ, "A": "1", TRIAL_ENV: "1"}


def test_the_html_copy_sits_beside_the_notebook() -> None:
    assert html_path(Path("runs/x/train.ipynb")) == Path("runs/x/train.html")


def test_stop_reasons_keep_their_exit_codes() -> None:
    assert exit_code_for_stop(EndReason.TERMINATED) == 143
    assert exit_code_for_stop("terminated") == 143
    assert exit_code_for_stop(EndReason.INTERRUPTED) == 130
    assert str(EndReason.EXITED) == "exited"


def test_prepare_parses_each_cell_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbsweep.notebook.parameters import parse_leniently
    from nbsweep.trial.run import prepare
    from nbsweep.trial.spec import TrialSpec

    nb = _notebook(
        "import math",
        "lr = 0.1\nepochs = 3",
        "import wandb\nwandb.init(config={'lr': lr})",
        "print(math.pi * lr)",
    )
    nb.cells[1].metadata["tags"] = ["parameters"]
    sources = [cell.source for cell in nb.cells]
    parse_leniently.cache_clear()
    parsed: list[str] = []
    real_parse = ast.parse

    def counting_parse(source: str, *args: object, **kwargs: object) -> ast.AST:
        if source in sources:
            parsed.append(source)
        return real_parse(source, *args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(ast, "parse", counting_parse)
    injection = prepare(TrialSpec(Path("x.ipynb"), [("lr", 0.5)]), nb)
    assert injection.values == {"lr": 0.5}
    assert sorted(parsed) == sorted(sources)
