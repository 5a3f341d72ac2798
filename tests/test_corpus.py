"""Every notebook of the shared corpus behaves under ``nbsweep run`` as its MANIFEST says.

The corpus (papermill's and nbclient's own test notebooks) lives in ``../shared/corpus``
next to the repository, or wherever ``$NBSWEEP_CORPUS`` points; without it these tests skip.
Each test copies the notebook it needs into ``tmp_path`` and runs the real CLI in a
subprocess there, so the kernel's working directory and the outputs are the test's own.

Cell indices in expectations are indices in the ORIGINAL notebook, as in the MANIFEST.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nbformat
import psutil
import pytest
from helpers import MARKER_ENV, describe, wait_until_gone
from nbformat import NotebookNode

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("NBSWEEP_CORPUS") or REPO_ROOT.parent / "shared" / "corpus")
NOTEBOOKS = CORPUS / "notebooks"
MANIFEST = NOTEBOOKS / "MANIFEST.tsv"

if not MANIFEST.is_file():
    pytest.skip(
        f"shared notebook corpus not found at {NOTEBOOKS} (set NBSWEEP_CORPUS)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.corpus

INJECTED_TAG = "injected-parameters"
STALE_TAGS = {INJECTED_TAG, "papermill-error-cell-tag"}
PYTHON_TRACEBACK = "Traceback (most recent call last):"


# --- leftover kernels -------------------------------------------------------------------


@pytest.fixture
def kernel_marker():
    """A unique marker for the environment of the processes a test starts; at the end no
    process carrying it may be alive (the kernel inherits nbsweep's environment)."""
    marker = uuid.uuid4().hex
    yield marker
    left = wait_until_gone(marker, timeout=3.0)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not left, f"processes survived the test: {describe(left)}"


def test_marker_guard_sees_marked_processes():
    """The leftover check is only worth something if it finds what it looks for."""
    marker = uuid.uuid4().hex
    with subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        env={**os.environ, MARKER_ENV: marker},
    ) as child:
        try:
            assert [p.pid for p in wait_until_gone(marker, timeout=0)] == [child.pid]
        finally:
            child.kill()
    assert wait_until_gone(marker, timeout=3.0) == []


# --- running the CLI ----------------------------------------------------------------------


def cell_tags(cell: NotebookNode) -> list[str]:
    return list(cell.metadata.get("tags", []))


def stdout_text(cell: NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def error_outputs(cell: NotebookNode) -> list[NotebookNode]:
    return [output for output in cell.get("outputs", []) if output.output_type == "error"]


@dataclass
class Run:
    """One finished ``nbsweep run``."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    output: Path
    source: NotebookNode
    """The notebook that was run, as it was on disk."""

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.args)}\nexit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )

    @cached_property
    def nb(self) -> NotebookNode:
        assert self.output.is_file(), f"no output notebook\n{self}"
        return nbformat.read(self.output, as_version=4)

    @property
    def record(self) -> dict:
        return self.nb.metadata["nbsweep"]

    @cached_property
    def origins(self) -> list[int | None]:
        """For each cell of the output notebook, its index in the source (None: injected).

        The output must be the source minus stale injected/error-marker cells, in order, plus
        at most injected cells; anything else fails here."""
        kept = [i for i, c in enumerate(self.source.cells) if not STALE_TAGS & set(cell_tags(c))]
        origins: list[int | None] = []
        position = 0
        for cell in self.nb.cells:
            if INJECTED_TAG in cell_tags(cell):
                origins.append(None)
                continue
            assert position < len(kept), f"output has an extra cell: {cell.source!r}"
            original = self.source.cells[kept[position]]
            assert (cell.cell_type, cell.source) == (original.cell_type, original.source), (
                f"output cell {len(origins)} is not source cell {kept[position]}"
            )
            origins.append(kept[position])
            position += 1
        assert position == len(kept), "cells of the source are missing from the output"
        return origins

    def cell(self, original_index: int) -> NotebookNode:
        """The output cell that was cell ``original_index`` of the source."""
        return self.nb.cells[self.origins.index(original_index)]

    def injected(self) -> list[tuple[int, NotebookNode]]:
        return [(i, c) for i, c in enumerate(self.nb.cells) if INJECTED_TAG in cell_tags(c)]


class Corpus:
    """Copies corpus notebooks into ``tmp_path`` and runs ``python -m nbsweep`` on them."""

    def __init__(self, tmp_path: Path, marker: str) -> None:
        self.tmp_path = tmp_path
        self.marker = marker

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("WANDB_", "NBSWEEP_", "NBEXECUTE_"))
        }
        return {**env, MARKER_ENV: self.marker, "PYTHONIOENCODING": "utf-8", **extra}

    def copy(self, name: str, folder: str = ".") -> Path:
        target = self.tmp_path / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NOTEBOOKS / name, target)
        return target

    def command(self, notebook: Path, args: tuple[str, ...], output: Path) -> list[str]:
        return [sys.executable, "-m", "nbsweep", "run", str(notebook), *args, "-o", str(output)]

    def run(
        self,
        name: str,
        *args: str,
        folder: str = ".",
        output: str = "out.ipynb",
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Run:
        notebook = self.copy(name, folder)
        out = self.tmp_path / output
        command = self.command(notebook, args, out)
        started = time.monotonic()
        done = subprocess.run(
            command,
            cwd=self.tmp_path,
            env=self.env(**(env or {})),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
        )
        seconds = time.monotonic() - started
        source = nbformat.read(NOTEBOOKS / name, as_version=4)
        return Run(command, done.returncode, done.stdout, done.stderr, seconds, out, source)

    def inspect(self, name: str, *args: str) -> subprocess.CompletedProcess:
        notebook = self.copy(name)
        return subprocess.run(
            [sys.executable, "-m", "nbsweep", "inspect", str(notebook), *args],
            cwd=self.tmp_path,
            env=self.env(),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
        )


@pytest.fixture
def corpus(tmp_path: Path, kernel_marker: str) -> Corpus:
    return Corpus(tmp_path, kernel_marker)


# --- expectations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """What one ``nbsweep run`` of a corpus notebook must do. Indices are original ones."""

    file: str
    args: tuple[str, ...] = ()
    exit_code: int = 0
    reason: str = "finished"
    failed_cell: int | None = None
    """The cell the trial failed at (stderr says 'cell N failed')."""
    ename: str | None = None
    """Expected in stderr and in the record; None: not checked (it varies)."""
    evalue: str | None = None
    last_cell: int | None = None
    """The last cell that may run (a failure or an exit there); None: all of them."""
    prints: dict[int, str] = field(default_factory=dict)
    """Exact stdout of these cells."""
    min_seconds: float = 0.0
    max_seconds: float = 60.0
    id: str = ""

    @property
    def has_values(self) -> bool:
        """Parameter values are given (execution options are written '--option VALUE')."""
        return any(
            arg in ("-p", "-r", "-f", "--args-json") or (arg.startswith("--") and "=" in arg)
            for arg in self.args
        )

    def param(self):
        return pytest.param(self, id=self.id or self.file.split("__", 1)[1].removesuffix(".ipynb"))


def check(run: Run, case: Case) -> None:
    """Everything the policy says about a run: exit code, messages, record, which cells ran."""
    assert run.returncode == case.exit_code, str(run)
    assert case.min_seconds <= run.seconds < case.max_seconds, str(run)
    assert not any(line.startswith(PYTHON_TRACEBACK) for line in run.stderr.splitlines()), str(run)
    nb = run.nb
    nbformat.validate(nb)
    record = run.record
    assert record["status"] == ("finished" if case.exit_code == 0 else "failed"), record
    assert record["reason"] == case.reason, record

    # Nothing stale survives: earlier tools' metadata, error-marker cells, old injections.
    assert "papermill" not in nb.metadata
    for cell in nb.cells:
        assert "papermill" not in cell.metadata
        assert "papermill-error-cell-tag" not in cell_tags(cell)
    injected = run.injected()
    assert len(injected) == (1 if case.has_values else 0), [c.source for _, c in injected]

    if case.failed_cell is None:
        assert "error" not in record, record
    else:
        headline = f"cell {case.failed_cell} failed"
        if case.ename:
            headline += f": {case.ename}"
            if case.evalue:
                headline += f": {case.evalue}"
        assert headline in run.stderr, str(run)
        assert f"notebook saved: {run.output}" in run.stderr, str(run)
        error = record["error"]
        # cell_index is an index into the saved notebook; source_cell_index into the original.
        assert run.origins[error["cell_index"]] == case.failed_cell, (error, run.origins)
        assert error["source_cell_index"] == case.failed_cell, error
        if case.ename:
            assert error["ename"] == case.ename, error
        if case.evalue is not None:
            assert error["evalue"] == case.evalue, error

    last = case.failed_cell if case.last_cell is None else case.last_cell
    last_out = len(nb.cells) if last is None else run.origins.index(last)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        original = run.origins[index]
        runnable = cell.source.strip() and "skip-execution" not in cell_tags(cell)
        if runnable and index <= last_out:
            # A cell the kernel died (or was killed) in may end before nbclient numbers it.
            may_be_unnumbered = original == case.failed_cell and case.reason != "cell-error"
            if not may_be_unnumbered:
                assert cell.execution_count is not None, f"cell {original} did not run\n{run}"
        else:
            assert cell.execution_count is None, f"cell {original} ran\n{run}"
            assert cell.outputs == [], f"cell {original} has outputs\n{run}"
    for index, text in case.prints.items():
        assert stdout_text(run.cell(index)) == text, str(run)


def run_case(corpus: Corpus, case: Case, **kwargs) -> Run:
    run = corpus.run(case.file, *case.args, **kwargs)
    check(run, case)
    return run


TIMEOUT_ARGS = ("--timeout", "2", "--stop-grace", "2")

CASES = [
    # Success: every runnable cell runs.
    Case("nbclient__Other-Comms.ipynb"),
    Case("nbclient__Skip-Execution-with-Cell-Tag.ipynb", prints={1: "ok\n"}),
    Case("nbclient__Sleep1s.ipynb", ("--timeout", "5"), min_seconds=1),
    Case("papermill__test_autosave.ipynb", prints={0: "".join(f"{i}\n" for i in range(25))}),
    Case("papermill__test_notebooknode_io.ipynb", prints={0: "Hello World\n"}),
    Case("papermill__blank-vscode.ipynb"),
    Case("papermill__no_parameters.ipynb", prints={1: "None\n"}),
    Case("papermill__report_mode_test.ipynb", ("--a=0",), prints={2: "1\n"}),
    # sys.exit(0), sys.exit() and raise SystemExit: success, and nothing after runs.
    Case("papermill__sysexit0.ipynb", reason="exited", last_cell=1),
    Case("papermill__sysexit.ipynb", reason="exited", last_cell=1),
    Case("papermill__systemexit.ipynb", reason="exited", last_cell=1),
    # Failures, named by the original index of the failing cell.
    Case("nbclient__Error.ipynb", (), 1, "cell-error", 0, "ZeroDivisionError"),
    Case("papermill__sysexit1.ipynb", (), 1, "cell-error", 1, "SystemExit", "1"),
    Case("papermill__broken.ipynb", (), 1, "cell-error", 0, "SyntaxError"),
    # The error is only in execute_reply: there is no error output at all.
    Case("papermill__line_magic_error.ipynb", (), 1, "cell-error", 0),
    # Fails in the parameters cell itself, before the injected cell.
    Case(
        "papermill__complex_parameters.ipynb", ("-p", "a", "3"), 1, "cell-error", 0, "SyntaxError"
    ),
    Case(
        "nbclient__Disable-Stdin.ipynb",
        (),
        1,
        "cell-error",
        0,
        "StdinNotImplementedError",
        max_seconds=20,
    ),
    Case("nbclient__Autokill.ipynb", (), 1, "kernel-died", 0, max_seconds=15),
    Case(
        "nbclient__Interrupt.ipynb",
        TIMEOUT_ARGS,
        1,
        "cell-timeout",
        0,
        min_seconds=2,
        max_seconds=20,
    ),
    Case(
        "nbclient__Sleep1s.ipynb",
        ("--timeout", "0.5", "--stop-grace", "1"),
        1,
        "cell-timeout",
        1,
        max_seconds=20,
        id="Sleep1s-cell-timeout",
    ),
    Case(
        "nbclient__Parallel-Execute-B.ipynb",
        (),
        1,
        "cell-error",
        2,
        "KeyError",
        id="Parallel-Execute-B-without-tmpdir",
    ),
]


@pytest.mark.kernel
@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_corpus_notebook(corpus: Corpus, case: Case):
    run_case(corpus, case)


# --- notebooks with more to check -----------------------------------------------------------


@pytest.mark.kernel
def test_simple_execute_prints_injected_value(corpus: Corpus):
    case = Case("papermill__simple_execute.ipynb", ("-p", "msg", "Hello", "--log-output"))
    run = run_case(corpus, case)
    assert "Hello\n" in run.stdout, str(run)
    assert stdout_text(run.cell(1)) == "Hello\n"
    assert run.origins == [0, None, 1, 2]  # injected right after the parameters cell
    assert "msg = 'Hello'" in run.nb.cells[1].source


@pytest.mark.kernel
def test_simple_execute_quotes_and_backslashes(corpus: Corpus):
    value = r"""do\ not\ crash "double" 'single' \n"""
    case = Case("papermill__simple_execute.ipynb", ("-r", "msg", value), prints={1: value + "\n"})
    run_case(corpus, case)


@pytest.mark.kernel
def test_rerun_of_papermill_output_replaces_injected_cell(corpus: Corpus):
    case = Case("papermill__binder-simple_output.ipynb", ("-p", "msg", "Bye"), prints={3: "Bye\n"})
    run = run_case(corpus, case)
    [(index, cell)] = run.injected()
    assert index == 2
    assert "msg = 'Bye'" in cell.source
    assert "Hello" not in cell.source


@pytest.mark.kernel
def test_nbformat_4_4_output_still_validates(corpus: Corpus):
    case = Case(
        "papermill__nb_version_4.4.ipynb", ("-p", "var", "It works"), prints={1: "It works\n"}
    )
    run = run_case(corpus, case)
    nb = run.nb
    nbformat.validate(nb)
    ids = [cell.get("id") for cell in nb.cells]
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
        assert None not in ids and len(set(ids)) == len(ids), ids
    else:
        assert ids == [None] * len(ids), ids
    # Stale execution counts (4, 5) are gone: this run counted from 1.
    assert [cell.execution_count for cell in nb.cells] == [1, 2, 3]


@pytest.mark.kernel
def test_stale_papermill_metadata_is_dropped(corpus: Corpus):
    case = Case("papermill__result_no_exec.ipynb", ("-p", "foo", "2"))
    run = run_case(corpus, case)
    assert "papermill" in run.source.metadata  # the corpus file does carry it
    assert "papermill" not in run.nb.metadata
    assert run.origins == [0, None]
    assert "foo = 2" in run.nb.cells[1].source
    assert "bar" not in run.nb.cells[1].source


@pytest.mark.kernel
def test_failure_reports_index_not_execution_count(corpus: Corpus):
    """Stale marker cells 0 and 2 go, markdown makes the count (2) differ from the index (6)."""
    case = Case(
        "papermill__broken1.ipynb",
        (),
        1,
        "cell-error",
        6,
        "AssertionError",
        prints={3: "We're good.\n"},
    )
    run = run_case(corpus, case)
    assert run.cell(6).execution_count == 2
    assert "cell 2 failed" not in run.stderr
    # The stale display_data outputs of cell 3 were replaced by this run's stream.
    assert [output.output_type for output in run.cell(3).outputs] == ["stream"]
    assert [error.ename for error in error_outputs(run.cell(6))] == ["AssertionError"]


@pytest.mark.kernel
def test_broken2_keeps_display_next_to_error(corpus: Corpus):
    case = Case("papermill__broken2.ipynb", (), 1, "cell-error", 1, prints={0: "We're good.\n"})
    run = run_case(corpus, case)
    [error] = error_outputs(run.cell(1))
    assert run.record["error"]["ename"] == error.ename
    # On IPython 9 importing display fails before anything is displayed: ImportError.
    if error.ename == "AssertionError":
        assert "display_data" in [output.output_type for output in run.cell(1).outputs]


@pytest.mark.kernel
def test_skip_exceptions_fails_and_traceback_keeps_non_ascii(corpus: Corpus):
    case = Case("nbclient__Skip-Exceptions.ipynb", (), 1, "cell-error", 0, "Exception", "message")
    run = run_case(corpus, case)
    [error] = error_outputs(run.cell(0))
    assert "üñîçø∂é" in "\n".join(error.traceback)


@pytest.mark.kernel
def test_raises_exception_tag_is_expected_error(corpus: Corpus):
    case = Case("nbclient__Skip-Exceptions-with-Cell-Tags.ipynb", prints={0: "hello\n", 1: "ok\n"})
    run = run_case(corpus, case)
    outputs = run.cell(0).outputs
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert "".join(stderr) == "errorred\n"
    assert [(e.ename, e.evalue) for e in error_outputs(run.cell(0))] == [("Exception", "message")]


@pytest.mark.kernel
def test_empty_cell_is_skipped(corpus: Corpus):
    run = run_case(corpus, Case("nbclient__Empty-Cell.ipynb"))
    counts = [run.cell(i).execution_count for i in (1, 2, 3)]
    assert counts == [1, None, 2]
    results = [run.cell(i).outputs for i in (1, 3)]
    assert [[o.output_type for o in outputs] for outputs in results] == [
        ["execute_result"],
        ["execute_result"],
    ]
    assert [outputs[0].data["text/plain"] for outputs in results] == ["'Code 1'", "'Code 2'"]


@pytest.mark.kernel
def test_keyboard_interrupt_times_out_and_stale_error_is_cleared(corpus: Corpus):
    """sleep(60) under --timeout 2: interrupted, failed as a timeout, kernel gone (fixture).
    The stale KeyboardInterrupt output (execution_count 2) is not read as the failure."""
    case = Case(
        "papermill__keyboard_interrupt.ipynb",
        TIMEOUT_ARGS,
        1,
        "cell-timeout",
        0,
        min_seconds=2,
        max_seconds=20,
    )
    run = run_case(corpus, case)
    cell = run.cell(0)
    assert run.source.cells[0].execution_count == 2
    assert cell.execution_count == 1
    assert len(error_outputs(cell)) <= 1


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("check_txt_in", "cwd_option", "passes"),
    [
        pytest.param("nb", None, True, id="in-notebook-folder"),
        pytest.param(".", None, False, id="only-in-runner-cwd"),
        pytest.param("elsewhere", "elsewhere", True, id="cwd-option"),
        pytest.param("nb", "elsewhere", False, id="cwd-option-without-file"),
    ],
)
def test_kernel_working_directory(
    corpus: Corpus, tmp_path: Path, check_txt_in: str, cwd_option: str | None, passes: bool
):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "nb").mkdir()
    (tmp_path / check_txt_in / "check.txt").write_text("here\n")
    args = ("--cwd", cwd_option) if cwd_option else ()
    if passes:
        case = Case("papermill__read_check.ipynb", args)
    else:
        case = Case("papermill__read_check.ipynb", args, 1, "cell-error", 1, "AssertionError")
    run = corpus.run(case.file, *args, folder="nb")
    check(run, case)
    kernel_cwd = tmp_path / (cwd_option or "nb")
    assert stdout_text(run.cell(1)) == f"NB_CWD {kernel_cwd.resolve()}\n"


@pytest.mark.kernel
def test_parallel_notebooks_run_concurrently(corpus: Corpus, tmp_path: Path):
    shared = tmp_path / "parallel"
    shared.mkdir()
    env = corpus.env(NBEXECUTE_TEST_PARALLEL_TMPDIR=str(shared))
    runs = {}
    for name in ("A", "B"):
        notebook = corpus.copy(f"nbclient__Parallel-Execute-{name}.ipynb")
        output = tmp_path / f"out-{name}.ipynb"
        command = corpus.command(notebook, (), output)
        runs[name] = (command, output, notebook)
    started = time.monotonic()
    processes = {
        name: subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        for name, (command, _, _) in runs.items()
    }
    results = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=90)
            command, output, notebook = runs[name]
            source = nbformat.read(notebook, as_version=4)
            seconds = time.monotonic() - started
            results[name] = Run(
                command, process.returncode, stdout, stderr, seconds, output, source
            )
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    for name, run in results.items():
        check(run, Case(f"nbclient__Parallel-Execute-{name}.ipynb", max_seconds=60))
    assert sorted(path.name for path in shared.iterdir()) == ["test_file_A.txt", "test_file_B.txt"]


@pytest.mark.kernel
def test_parallel_notebook_alone_times_out_waiting(corpus: Corpus, tmp_path: Path):
    shared = tmp_path / "parallel"
    shared.mkdir()
    case = Case(
        "nbclient__Parallel-Execute-A.ipynb",
        (),
        1,
        "cell-error",
        3,
        "AssertionError",
        min_seconds=5,
    )
    run = run_case(corpus, case, env={"NBEXECUTE_TEST_PARALLEL_TMPDIR": str(shared)})
    assert "Timed out" in run.record["error"]["evalue"]


# --- usage errors: exit 2, one 'Error:' line, nothing run ----------------------------------


def assert_usage_error(run: Run, *fragments: str) -> str:
    assert run.returncode == 2, str(run)
    assert PYTHON_TRACEBACK not in run.stderr, str(run)
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, str(run)
    assert run.stderr.rstrip("\n").splitlines()[-1] == errors[0], str(run)
    for fragment in fragments:
        assert fragment in errors[0], str(run)
    return errors[0]


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
@pytest.mark.parametrize(
    ("file", "args"),
    [
        ("papermill__no_parameters.ipynb", ("-p", "msg", "hi")),
        ("papermill__blank-vscode.ipynb", ("-p", "var", "It works")),
        ("papermill__blank-vscode.ipynb", ("--var=1",)),
    ],
)
def test_values_without_parameters_cell_are_refused(corpus: Corpus, file: str, args):
    run = corpus.run(file, *args)
    assert_usage_error(run, "no parameters found", "tag")
    assert not run.output.exists()


def test_r_notebook_with_values_names_its_language(corpus: Corpus):
    run = corpus.run("papermill__notimplemented_translator.ipynb", "-p", "msg", "hi")
    assert_usage_error(run, "language", "'r'")
    assert not run.output.exists()


@pytest.mark.kernel
def test_r_notebook_without_values_names_missing_kernel(corpus: Corpus):
    run = corpus.run("papermill__notimplemented_translator.ipynb", timeout=30)
    assert_usage_error(run, "kernel", "'r'")
    assert run.seconds < 15, str(run)


def test_complex_parameters_are_discovered(corpus: Corpus):
    done = corpus.inspect("papermill__complex_parameters.ipynb", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["style"] == "parameters-cell"
    assert found["cell_index"] == 0
    parameters = {p["name"]: p for p in found["parameters"]}
    assert {"msg", "a", "b", "c"} <= set(parameters)
    assert parameters["msg"]["default"] is None
    assert (parameters["a"]["type"], parameters["a"]["default"]) == ("float", 2.25)
    assert (parameters["b"]["type"], parameters["b"]["default"]) == (
        "List[str]",
        ["Hello", "World"],
    )
    assert parameters["c"]["type"].strip("'\"") == "NoneType"
    assert parameters["c"]["default"] is None


# --- the corpus itself ------------------------------------------------------------------------


COVERED_ELSEWHERE = {
    "papermill__simple_execute.ipynb",
    "papermill__binder-simple_output.ipynb",
    "papermill__nb_version_4.4.ipynb",
    "papermill__result_no_exec.ipynb",
    "papermill__broken1.ipynb",
    "papermill__read_check.ipynb",
    "nbclient__Parallel-Execute-A.ipynb",
    "nbclient__Skip-Exceptions-with-Cell-Tags.ipynb",
    "nbclient__Empty-Cell.ipynb",
    "papermill__notimplemented_translator.ipynb",
    "papermill__broken2.ipynb",
    "nbclient__Skip-Exceptions.ipynb",
    "papermill__keyboard_interrupt.ipynb",
}


def test_every_manifest_notebook_is_tested():
    with MANIFEST.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    listed = {row["file"] for row in rows}
    assert all(row["expected_behaviour_for_a_parameter_injecting_runner"] for row in rows)
    on_disk = {path.name for path in NOTEBOOKS.glob("*.ipynb")}
    assert listed == on_disk
    tested = {case.file for case in CASES} | COVERED_ELSEWHERE
    assert listed - tested == set()
