"""kernel/launcher.py runs as text (``python -c``) in every kernel and the fork template."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from nbsweep.kernel import launcher


def test_the_command_runs_the_modules_own_text() -> None:
    command = launcher.command("-f", "{connection_file}")
    assert command[1] == "-c"
    assert command[2].startswith("# nbsweep: ipykernel_launcher")  # ps and pkill see it
    assert command[3:] == ["-f", "{connection_file}"]


def test_jupyter_client_substitutes_nothing_in_its_text() -> None:
    # jupyter_client fills {connection_file}, {prefix}, {resource_dir} and every launch
    # keyword ({env}: the whole environment, secrets too) in every argument: the text has no
    # {name} at all, so no key added later can change it.
    text = launcher.command()[2]
    assert re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", text) == []


@pytest.mark.kernel  # runs the kernels' launcher, which the unit layer's guard counts as one
def test_a_kernels_folder_does_not_stand_in_for_the_standard_library(tmp_path) -> None:
    """Run as ``python -c``, the kernel's folder comes first on sys.path: a notebook's own
    types.py or typing.py must not replace the modules the launcher imports."""
    for name in ("types", "typing", "pathlib", "functools"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('the notebook folder won')\n")
    code = launcher.command()[2] + "\nprint(TEMPLATE_NAME)\n"
    code = code.replace('if __name__ == "__main__":\n    main()', "")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == launcher.TEMPLATE_NAME


def test_it_imports_no_nbsweep_so_a_kernel_holds_only_its_notebooks_modules() -> None:
    tree = ast.parse(launcher.command()[2])
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] == "nbsweep"}
