"""Collect a trial's parameter values from every way a sweep can pass them.

Precedence, lowest first (a later source overrides an earlier one, name by name; dotted
names and dict values deep-merge into nested parameters):

1. the notebook's own defaults;
2. ``-f/--parameters-file FILE`` (YAML or JSON), in the order given;
3. ``--args-json JSON`` and a bare JSON object argument (W&B's ``${args_json}``), and a
   ``.json`` path argument (``${args_json_file}``);
4. ``--name=value``, ``--name value``, ``--flag``, ``name=value`` (W&B's ``${args}``,
   ``${args_no_equals}``, ``${args_no_boolean_flags}``, ``${args_no_hyphens}``);
5. the file named by ``WANDB_SWEEP_PARAM_PATH`` (set by ``wandb agent``): it holds the same
   values as ``${args}`` but with their YAML types intact, where ``${args}`` went through str();
6. ``-p NAME VALUE`` and ``-r NAME VALUE`` (raw string), the explicit override.

Values written as text are read with ``ast.literal_eval`` and kept as the raw string when
they are not a literal: ``--lr=1e-3`` is a float, ``--name=adam`` the string 'adam'.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbsweep.errors import UsageError
from nbsweep.notebook.literals import MAX_DEPTH, nesting_depth
from nbsweep.notebook.textfile import read_text
from nbsweep.sweeping.configs import yamlfile

PARAM_PATH_ENV = "WANDB_SWEEP_PARAM_PATH"

Pairs = list[tuple[str, Any]]


@dataclass(frozen=True)
class ParameterSources:
    """Every place a value can come from, as given on the command line and environment."""

    tokens: Sequence[str] = ()
    """Free arguments after the notebook: ``--lr=0.1``, ``lr=0.1``, ``{"lr": 0.1}``."""
    files: Sequence[str] = ()
    args_json: Sequence[str] = ()
    pairs: Sequence[tuple[str, str]] = ()
    raw_pairs: Sequence[tuple[str, str]] = ()
    param_path: str | None = None
    """``WANDB_SWEEP_PARAM_PATH``, when running under ``wandb agent``."""


def parse_value(text: str) -> Any:
    """A Python literal if ``text`` is one, else ``text`` itself."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def collect(sources: ParameterSources) -> Pairs:
    """All (name, value) pairs in precedence order, lowest first."""
    pairs: Pairs = []
    for path in sources.files:
        pairs += _mapping_pairs(_load_mapping(path), f"parameters file {path!r}")
    json_tokens, arg_pairs = _parse_tokens(sources.tokens)
    for text in [*sources.args_json, *json_tokens]:
        pairs += _mapping_pairs(_json_object(text), "--args-json")
    pairs += arg_pairs
    if sources.param_path:
        pairs += read_param_file(sources.param_path)
    pairs += [(name, parse_value(value)) for name, value in sources.pairs]
    pairs += list(sources.raw_pairs)
    return pairs


def read_param_file(path: str) -> Pairs:
    """Values from a ``wandb agent`` config file: ``name: {value: v}`` entries."""
    data = yamlfile.load_file(path, f"{PARAM_PATH_ENV} file")
    if not isinstance(data, dict):
        raise UsageError(f"{PARAM_PATH_ENV} file {path!r} does not hold a mapping")
    return [
        (str(name), entry["value"])
        for name, entry in data.items()
        if isinstance(entry, dict) and "value" in entry and not str(name).startswith("_")
    ]


def _parse_tokens(tokens: Sequence[str]) -> tuple[list[str], Pairs]:
    json_tokens: list[str] = []
    pairs: Pairs = []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if token.lstrip().startswith("{"):
            json_tokens.append(token)
        elif token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            if not has_value:
                following = tokens[position] if position < len(tokens) else None
                if following is not None and not following.startswith("--"):
                    value, position = following, position + 1
                else:
                    value = "True"  # ${args_no_boolean_flags}: a bare --flag is true
            pairs.append((name, parse_value(value)))
        elif token.startswith("-") and not token[1:2].isdigit():
            raise UsageError(f"unknown option {token!r}: see `nbsweep run --help`")
        elif "=" in token:
            name, _, value = token.partition("=")
            pairs.append((name.lstrip("+"), parse_value(value)))  # hydra's +k=v and ++k=v
        elif token.endswith(".json") and Path(token).exists():
            json_tokens.append(read_text(token, "--args-json file", limit=yamlfile.MAX_BYTES))
        else:
            raise UsageError(
                f"unexpected argument {token!r}: pass parameters as --name=value, name=value "
                "or -p NAME VALUE"
            )
    return json_tokens, pairs


def _json_object(text: str) -> dict[str, Any]:
    too_deep = f"--args-json nests more than {MAX_DEPTH} levels deep; nbsweep reads at most that"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--args-json is not valid JSON ({error.msg} at {error.pos})") from None
    except RecursionError:  # json's own guard, some 1000 levels down
        raise UsageError(too_deep) from None
    if nesting_depth(data) > MAX_DEPTH:
        raise UsageError(too_deep)
    if not isinstance(data, dict):
        raise UsageError("--args-json must be a JSON object such as '{\"lr\": 0.1}'")
    return data


def _load_mapping(path: str) -> dict[str, Any]:
    data = yamlfile.load_file(path, "parameters file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"parameters file {path!r} must hold a mapping of name: value")
    return data


def _mapping_pairs(data: dict[str, Any], where: str) -> Pairs:
    bad = [name for name in data if not isinstance(name, str)]
    if bad:
        raise UsageError(f"{where}: parameter names must be strings, not {bad[0]!r}")
    return list(data.items())
