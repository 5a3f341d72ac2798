"""Install lines do not run in trials (unless --run-install-cells): unit tests of the pure
transform, and real kernels proving the installer never ran."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from conftest import make_notebook, write_notebook
from test_wandb_way import fake_installers

from nbsweep.install_cells import SKIPPED, describe, skip_install_lines

SKIPS = [
    "!pip install wandb -Uq",
    "%pip install -q wandb",
    "!pip3 install torch==2.1",
    "!python -m pip install --upgrade x",
    "!python3 -m pip install x",
    "%conda install -y numpy",
    "!conda install -c conda-forge numpy",
    "!mamba install x",
    "! pip install x",
    "!pip -q install x",
    "%uv pip install x",
]
KEEPS = [
    "!pip list",
    "!pip freeze > requirements.txt",
    "%pip show wandb",
    "print('pip install x')",
    "install = 3",
    "# !pip install x",
    "x = '!pip install y'",
]


@pytest.mark.parametrize("line", SKIPS)
def test_install_lines_are_skipped(line):
    nb = make_notebook([f"{line}\nprint('after')"])
    skipped = skip_install_lines(nb)
    assert [s.line for s in skipped] == [line.strip()]
    first, second = nb.cells[0].source.split("\n")
    assert first.startswith(SKIPPED) and line.strip() in first
    assert second == "print('after')"


@pytest.mark.parametrize("line", KEEPS)
def test_other_lines_are_left_alone(line):
    nb = make_notebook([line])
    assert skip_install_lines(nb) == [] and nb.cells[0].source == line


def test_continuations_indentation_capture_and_twice():
    nb = make_notebook(
        [
            "%%capture\n!pip install wandb",
            "!pip install a \\\n    b c\nimport os",
            "try:\n    import foo\nexcept ImportError:\n    !pip install foo\nx = 1",
        ]
    )
    skipped = skip_install_lines(nb)
    lines = ["!pip install wandb", "!pip install a b c", "!pip install foo"]
    assert [s.line for s in skipped] == lines
    assert nb.cells[0].source.startswith("%%capture\n# nbsweep skipped:")
    assert nb.cells[1].source.split("\n")[1] == "import os"
    ast.parse(nb.cells[2].source)  # still Python once IPython's `!` lines are gone
    assert "    pass  # nbsweep skipped: !pip install foo" in nb.cells[2].source
    before = [cell.source for cell in nb.cells]
    assert skip_install_lines(nb) == []
    assert [cell.source for cell in nb.cells] == before
    message = describe(skipped, [0, 1, 2])
    assert message == (
        "skipped 3 install lines (cell 0: !pip install wandb and 2 more); "
        "--run-install-cells runs them"
    )


NOTEBOOK = [("x = 1", ["parameters"]), "!pip install somepkg -q\nprint('after install', x)"]


@pytest.mark.kernel
def test_nbsweep_run_never_runs_the_installer(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    folder, marker = fake_installers(tmp_path)
    path = f"{folder}:{cli.env['PATH']}"
    result = cli("run", "nb.ipynb", "--x=2", "-o", "out.ipynb", PATH=path)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "after install 2" in saved.cells[-1].outputs[0]["text"]
    assert result.stderr.count("skipped 1 install line (cell 1: !pip install somepkg -q)") == 1
    kept = cli("run", "nb.ipynb", "--run-install-cells", "-o", "out2.ipynb", PATH=path)
    assert kept.returncode == 0, kept.stderr
    assert marker.read_text().split()[1:] == ["install", "somepkg", "-q"]
    assert "skipped" not in kept.stderr


@pytest.mark.kernel
def test_the_agent_says_it_once_and_never_runs_the_installer(cli, tmp_path: Path):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nparameters:\n  x: {values: [1, 2, 3]}\n"
    )
    folder, marker = fake_installers(tmp_path)
    env = {"PATH": f"{folder}:{cli.env['PATH']}", "NBSWEEP_STORE": str(tmp_path / "s.db")}
    created = cli("sweep", "--local", "sweep.yaml", **env)
    assert created.returncode == 0, created.stderr
    result = cli("agent", f"local:{created.stdout.split()[3]}", "--no-wandb", **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("skipped 1 install line") == 1
    assert result.stderr.count("finished (finished)") == 3
    assert not marker.exists()
