"""The layers as the README draws them: the command line comes in through the library's
facade only, and `import nbsweep` (every trial's kernel does it) stays light."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbsweep

PACKAGE = Path(nbsweep.__file__).parent
CLI_MAY_IMPORT = ("nbsweep.api", "nbsweep.errors", "nbsweep.cli")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every nbsweep module ``path`` imports, anywhere in it (functions and
    ``TYPE_CHECKING`` blocks too), with its line; ``from nbsweep import api`` counts as
    ``nbsweep.api``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            module = node.module or ""
            if module == "nbsweep":
                found += [(node.lineno, f"nbsweep.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, name) for line, name in found if name.split(".")[0] == "nbsweep"]


def test_the_cli_imports_only_the_facade_errors_and_itself():
    modules = sorted((PACKAGE / "cli").glob("*.py"))
    assert len(modules) >= 6
    wrong = [
        f"{path.name}:{line}: {name}"
        for path in modules
        for line, name in imported_modules(path)
        if not any(name == allowed or name.startswith(f"{allowed}.") for allowed in CLI_MAY_IMPORT)
    ]
    assert wrong == []


def test_the_checker_sees_function_local_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from nbsweep.local import store\n    import nbsweep.trial\n")
    assert imported_modules(source) == [(2, "nbsweep.local"), (3, "nbsweep.trial")]


def modules_loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    listing = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    output = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, env=env, check=True
    ).stdout
    return set(json.loads(output))


def test_import_nbsweep_loads_neither_the_api_nor_wandb_nor_nbclient():
    loaded = modules_loaded_by("import nbsweep")
    assert "nbsweep" in loaded
    assert not loaded & {"nbsweep.api", "wandb", "nbclient"}


LONGEST_FUNCTION = 60
ROOMS_OF_SHORT_FUNCTIONS = ("kernel", "trial", "sweeping")


def long_functions(root: Path, limit: int) -> list[str]:
    """Every function (methods and nested functions too) under ``root`` longer than
    ``limit`` lines, counted from its ``def`` to its last line, docstring included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} {length}")
    return found


def test_no_function_in_the_trial_path_is_long():
    """Issue 21's rule for the rooms a trial runs through: no function over 60 lines."""
    long = [
        f"{room}/{line}"
        for room in ROOMS_OF_SHORT_FUNCTIONS
        for line in long_functions(PACKAGE / room, LONGEST_FUNCTION)
    ]
    assert long == []


def test_the_length_check_counts_nested_functions_and_methods(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(61))
    (tmp_path / "m.py").write_text(f"class C:\n    def method(self):\n{body}\n")
    assert long_functions(tmp_path, LONGEST_FUNCTION) == ["m.py:2 method 62"]


def test_nbsweep_run_starts_its_kernel_before_loading_the_rest():
    """`nbsweep run` boots its kernel first and loads notebooks, the executor and W&B's side
    while it boots: the module that starts it loads none of them."""
    loaded = modules_loaded_by("from nbsweep.cli import run\nfrom nbsweep.api import run_command")
    assert "nbsweep.kernel.prestart" in loaded
    heavy = {"nbformat", "nbclient", "wandb", "nbsweep.trial.run", "nbsweep.api.trials"}
    assert not loaded & heavy, loaded & heavy
