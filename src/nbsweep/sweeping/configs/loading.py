"""Read a sweep config: a sweep YAML (noting where PyYAML alone, as ``wandb sweep`` uses it,
would read a value otherwise), or the sweep a notebook's own ``wandb.sweep`` call makes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nbsweep.errors import NotebookError, UsageError
from nbsweep.notebook.textfile import read_text
from nbsweep.sweeping.configs import yamlfile

if TYPE_CHECKING:
    from nbsweep.notebook.wandb_way import NotebookSweep


@dataclass(frozen=True)
class LoadedSweep:
    config: Any
    """The parsed YAML: a dict for every file ``validate`` can accept."""
    text: str
    enotation_fixes: list[str]
    """Where nbsweep reads a number that PyYAML's default loader (which ``wandb sweep`` uses)
    reads as text, e.g. ``parameters.lr.min: '1e-5' read as 1e-05``."""


def load_sweep_file(path: str | Path) -> LoadedSweep:
    """Parse a sweep YAML (UsageError if unreadable or malformed) and note where PyYAML's
    default loader would have read it differently."""
    config = yamlfile.load_file(path, "sweep file")
    text = read_text(path, "sweep file", limit=yamlfile.MAX_BYTES)
    # One grammar, other resolvers: this cannot fail where yamlfile succeeded.
    as_pyyaml_reads_it = yaml.safe_load(text)
    return LoadedSweep(config, text, list(_differences(as_pyyaml_reads_it, config, "")))


def load_sweep(path: Path) -> LoadedSweep:
    """A sweep YAML, or a notebook that calls ``wandb.sweep`` itself: its dict, with
    ``program:`` the notebook (UsageError, one line, if it has none it can be read from)."""
    if path.suffix != ".ipynb":
        return load_sweep_file(path)
    from nbsweep.notebook.files import read_notebook
    from nbsweep.notebook.wandb_way import analyse

    config = notebook_sweep_config(path, analyse(read_notebook(path)))
    return LoadedSweep(config, yaml.safe_dump(config, sort_keys=False), [])


def notebook_sweep_config(notebook: Path, shape: NotebookSweep) -> dict[str, Any]:
    """The notebook's own sweep as a sweep config: ``program:`` the notebook, the project of
    its ``wandb.sweep`` call where the config names none. Raises UsageError if it has none,
    or if a cell is not Python (a dict read around a syntax error could be the wrong one)."""
    error = shape.syntax_error()
    if error is not None:
        raise NotebookError(f"{notebook}: {error}")
    if shape.config is None:
        if shape.problems:
            raise UsageError(
                f"{notebook}: cannot read the dict passed to wandb.sweep: "
                + "; ".join(shape.problems)
            )
        raise UsageError(
            f"{notebook} calls no wandb.sweep with a dict: write a sweep YAML (`nbsweep "
            "inspect --sweep-template` starts one) and pass that instead"
        )
    config: dict[str, Any] = {"program": str(notebook), **shape.config}
    config["program"] = str(notebook)
    for key in ("project", "entity"):
        value = getattr(shape, key)
        if value and not config.get(key):
            config[key] = value
    return config


def _differences(theirs: Any, ours: Any, path: str) -> Iterator[str]:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for (key, their_value), our_value in zip(theirs.items(), ours.values(), strict=False):
            yield from _differences(their_value, our_value, f"{path}.{key}" if path else str(key))
    elif isinstance(theirs, list) and isinstance(ours, list):
        for index, (their_item, our_item) in enumerate(zip(theirs, ours, strict=False)):
            yield from _differences(their_item, our_item, f"{path}[{index}]")
    elif (type(theirs), repr(theirs)) != (type(ours), repr(ours)):  # repr: nan != nan
        yield f"{path or '(top level)'}: {theirs!r} read as {ours!r}"


def yaml_text(config: Mapping[str, Any]) -> str:
    """A sweep config as the YAML nbsweep shows and sends: keys in order, short lists inline."""
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)
