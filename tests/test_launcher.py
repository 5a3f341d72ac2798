"""kernel/launcher.py runs as text (``python -c``) in every kernel and the fork template."""

from __future__ import annotations

import ast
import re

from nbsweep.kernel import launcher


def test_the_command_runs_the_modules_own_text() -> None:
    command = launcher.command("-f", "{connection_file}")
    assert command[1] == "-c"
    assert command[2].startswith("# nbsweep: ipykernel_launcher")  # ps and pkill see it
    assert command[3:] == ["-f", "{connection_file}"]


def test_jupyter_client_substitutes_nothing_in_its_text() -> None:
    # jupyter_client fills {connection_file}, {prefix}, {resource_dir} in every argument.
    text = launcher.command()[2]
    assert not set(re.findall(r"\{([A-Za-z0-9_]+)\}", text)) & {
        "connection_file",
        "prefix",
        "resource_dir",
    }


def test_it_imports_no_nbsweep_so_a_kernel_holds_only_its_notebooks_modules() -> None:
    tree = ast.parse(launcher.command()[2])
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] == "nbsweep"}
