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


def test_import_nbsweep_loads_neither_the_api_nor_wandb_nor_nbclient():
    code = "import json, sys, nbsweep; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    loaded = set(json.loads(output))
    assert "nbsweep" in loaded
    assert not loaded & {"nbsweep.api", "wandb", "nbclient"}
