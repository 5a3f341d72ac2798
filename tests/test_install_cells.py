"""Install lines do not run in trials (unless --run-install-cells): unit tests of the pure
transform, and real kernels proving the installer never ran."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from helpers import fake_installers, make_notebook, write_notebook
from IPython.core.inputtransformer2 import TransformerManager

from nbsweep.notebook.install_cells import (
    MARK,
    SkippedLine,
    is_skipped_message,
    skip_install_lines,
    skipped_message,
)
from nbsweep.options import TrialSettings
from nbsweep.trial.run import prepare
from nbsweep.trial.spec import TrialSpec

SKIPS = [
    "!pip install wandb -Uq",
    "%pip install -q wandb",
    "%pip install wandb -Uq",
    "!pip3 install torch==2.1",
    "!python -m pip install --upgrade x",
    "!python3 -m pip install x",
    "!{sys.executable} -m pip install x",
    "%conda install -y numpy",
    "!conda install -c conda-forge numpy",
    "!mamba install x",
    "%mamba install x",
    "! pip install x",
    "!!pip install x",
    "!pip -q install x",
    "!uv pip install x",
    "!pip install",
]
KEEPS = [
    "!pip list",
    "!pip freeze > requirements.txt",
    "%pip show wandb",
    "!pip uninstall -y x",
    "!pip installer",
    "print('pip install x')",
    "x = '!pip install y'",
    "install = 3",
    "# !pip install x",
    's = """\n!pip install x\n"""',
    "%%bash\npip install x",
    "%%writefile req.txt\n!pip install x",
]


def one_cell(source: str) -> tuple[list[SkippedLine], str]:
    nb = make_notebook([source])
    skipped = skip_install_lines(nb)
    return skipped, nb.cells[0].source


def runs_in_ipython(source: str) -> None:
    """What the kernel would compile: IPython's transforms, then Python's."""
    compile(TransformerManager().transform_cell(source), "<cell>", "exec")


@pytest.mark.parametrize("line", SKIPS)
def test_install_lines_are_skipped_and_the_rest_runs(line):
    skipped, source = one_cell(f"{line}\nprint('after')")
    assert skipped == [SkippedLine(0, line)]
    assert source == f"{MARK}{line} (--run-install-cells runs it)\nprint('after')"
    runs_in_ipython(source)


@pytest.mark.parametrize("line", KEEPS)
def test_other_lines_are_left_alone(line):
    assert one_cell(line) == ([], line)


def test_a_capture_cell_keeps_its_magic_when_its_only_line_is_skipped():
    skipped, source = one_cell("%%capture\n%pip install wandb -Uq")
    assert [s.line for s in skipped] == ["%pip install wandb -Uq"]
    assert source == f"%%capture\n{MARK}%pip install wandb -Uq (--run-install-cells runs it)"
    runs_in_ipython(source.split("\n", 1)[1])  # the body %%capture runs


def test_a_continued_command_is_one_command_and_keeps_the_line_count():
    skipped, source = one_cell("!pip install a \\\n    b \\\n    c\nimport os")
    assert [s.line for s in skipped] == ["!pip install a b c"]
    assert source.split("\n") == [
        f"{MARK}!pip install a b c (--run-install-cells runs it)",
        "#",
        "#",
        "import os",
    ]
    runs_in_ipython(source)


def test_an_indented_install_line_leaves_its_block_valid():
    cell = "try:\n    import foo\nexcept ImportError:\n    !pip install foo\nx = 1"
    skipped, source = one_cell(cell)
    assert [s.line for s in skipped] == ["!pip install foo"]
    assert source.split("\n")[3] == (
        f"    pass  {MARK}!pip install foo (--run-install-cells runs it)"
    )
    runs_in_ipython(source)


def test_running_it_twice_changes_nothing_and_says_the_same():
    cells = ["%%capture\n!pip install a", "if True:\n    %pip install b\n", "!pip install c \\\n d"]
    nb = make_notebook([*cells, "x = 1"])
    first = skip_install_lines(nb)
    assert [s.line for s in first] == ["!pip install a", "%pip install b", "!pip install c d"]
    once = [cell.source for cell in nb.cells]
    assert skip_install_lines(nb) == first
    assert [cell.source for cell in nb.cells] == once


def test_run_install_cells_on_an_executed_notebook_runs_what_its_trial_skipped():
    spec = TrialSpec(Path("nb.ipynb"), [("x", 2)])
    executed = prepare(spec, make_notebook(NOTEBOOK)).notebook
    again = prepare(spec, executed)
    # Said again, numbered in the executed notebook (its injected cell comes first).
    assert SAID.replace("cell 1", "cell 2") in again.warnings
    settings = TrialSettings(run_install_cells=True)
    kept = prepare(TrialSpec(Path("nb.ipynb"), [("x", 3)], settings=settings), executed)
    assert kept.notebook.cells[-1].source == NOTEBOOK[-1]


def test_the_message_names_the_users_cells_in_one_line():
    skipped = [SkippedLine(2, "!pip install wandb -Uq")]
    message = skipped_message(skipped, lambda index: index - 1)
    assert message == (
        "skipped 1 install line (cell 1: !pip install wandb -Uq); --run-install-cells runs them"
    )
    assert is_skipped_message(message) and not is_skipped_message("injected x anyway")
    many = [SkippedLine(index, f"!pip install p{index}") for index in range(5)]
    assert skipped_message(many, lambda index: index) == (
        "skipped 5 install lines (cell 0: !pip install p0; cell 1: !pip install p1; "
        "cell 2: !pip install p2; and 2 more); --run-install-cells runs them"
    )
    assert skipped_message([], lambda index: index) is None


NOTEBOOK = [("x = 1", ["parameters"]), "!pip install somepkg -q\nprint('after install', x)"]
# The install cell is the user's cell 1; in the trial an injected cell comes before it.
SAID = "skipped 1 install line (cell 1: !pip install somepkg -q); --run-install-cells runs them"


@pytest.mark.parametrize("run_install_cells", [False, True])
def test_prepare_skips_them_unless_asked_and_leaves_the_users_notebook(run_install_cells):
    nb = make_notebook(NOTEBOOK)
    settings = TrialSettings(run_install_cells=run_install_cells)
    spec = TrialSpec(Path("nb.ipynb"), [("x", 2)], settings=settings)
    injection = prepare(spec, nb)
    sources = [cell.source for cell in injection.notebook.cells]
    assert any(MARK in source for source in sources) is not run_install_cells
    assert (SAID in injection.warnings) is not run_install_cells
    assert nb.cells[1].source.startswith("!pip install")


def path_with(folder: str, env: dict) -> str:
    return f"{folder}:{env['PATH']}"


@pytest.mark.kernel
def test_nbsweep_run_never_runs_the_installer(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    folder, marker = fake_installers(tmp_path)
    result = cli("run", "nb.ipynb", "--x=2", "-o", "out.ipynb", PATH=path_with(folder, cli.env))
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "after install 2" in saved.cells[-1].outputs[0]["text"]
    assert MARK in saved.cells[-1].source
    assert result.stderr.count(SAID) == 1


@pytest.mark.kernel
def test_run_install_cells_runs_them(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    folder, marker = fake_installers(tmp_path)
    args = ("run", "nb.ipynb", "--run-install-cells", "-o", "out.ipynb")
    result = cli(*args, PATH=path_with(folder, cli.env))
    assert result.returncode == 0, result.stderr
    assert marker.read_text().split()[1:] == ["install", "somepkg", "-q"]
    assert "install line" not in result.stderr


@pytest.mark.kernel
def test_the_agent_says_it_once_and_never_runs_the_installer(cli, tmp_path: Path):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nparameters:\n  x: {values: [1, 2]}\n"
    )
    folder, marker = fake_installers(tmp_path)
    env = {"PATH": path_with(folder, cli.env), "NBSWEEP_STORE": str(tmp_path / "s.db")}
    created = cli("sweep", "--local", "sweep.yaml", **env)
    assert created.returncode == 0, created.stderr
    result = cli("agent", f"local:{created.stdout.split()[3]}", "--no-wandb", **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("finished (finished)") == 2
    assert result.stderr.count(SAID) == 1
    assert not marker.exists()
