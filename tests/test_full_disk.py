"""A full disk is one line, not a traceback: nothing half-written replaces a good file,
`nbsweep run` still prints its metrics, the agent fails the trial and goes on. The output
folder is a 1 MiB tmpfs (skipped where this process cannot mount one)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from helpers import CliRun, write_notebook

pytestmark = pytest.mark.kernel

# Two cells under the 1 Mi characters a notebook keeps of each: a notebook over 1 MiB.
BIG_OUTPUT = [
    ("size = 700_000", ["parameters"]),
    "import nbsweep\nnbsweep.log({'loss': 0.25})\nprint('x' * size)",
    "print('y' * size)",
]


@pytest.fixture
def tiny_disk(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_nbsweep_run_on_a_full_disk(cli, tmp_path, tiny_disk):
    write_notebook(tmp_path / "big.ipynb", BIG_OUTPUT)
    good = tiny_disk / "out.ipynb"
    good.write_text("an earlier run's notebook")
    result = cli("run", "big.ipynb", "-o", good)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: trial ran, but its notebook was not saved: cannot write '{good}': "
        "No space left on device"
    ]
    assert result.stdout == "loss\t0.25\n", "the metrics it has are still printed"
    assert good.read_text() == "an earlier run's notebook", "nothing half-written replaced it"
    assert [p.name for p in tiny_disk.iterdir()] == ["out.ipynb"], "no temp file left"


def test_the_agent_fails_the_trial_and_goes_on(tmp_path, tiny_disk, request):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    runner = CliRun(tiny_disk, f"full-disk-{request.node.name}-{time.time_ns()}")
    runner.env["NBSWEEP_STORE"] = str(tmp_path / "s.db")
    try:
        write_notebook(tiny_disk / "big.ipynb", BIG_OUTPUT)
        (tiny_disk / "s.yaml").write_text(
            "program: big.ipynb\nmethod: grid\nparameters:\n  size: {values: [700000, 10]}\n"
        )
        created = runner("sweep", "--local", "s.yaml")
        assert created.returncode == 0, created.stderr
        sweep = created.stdout.split()[3]
        result = runner("agent", f"local:{sweep}", "--no-wandb")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        status = runner("status", f"local:{sweep}", "--json")
        import json

        runs = {run["values"]["size"]: run for run in json.loads(status.stdout)["runs"]}
        assert runs[700000]["state"] == "failed"
        assert runs[10]["state"] == "finished", "the next trial ran"
        assert Path(runs[10]["notebook"]).name == "big.ipynb"
    finally:
        runner.finish(timeout=10)


def test_html_lost_on_a_full_disk_is_a_warning_naming_it(cli, tmp_path, tiny_disk):
    """The notebook fits, its HTML copy does not: the trial stands as it ran (finished,
    exit 0), one warning names the HTML file, and the saved notebook is whole."""
    write_notebook(tmp_path / "mid.ipynb", [("size = 600_000", ["parameters"]), BIG_OUTPUT[1]])
    output = tiny_disk / "out.ipynb"
    result = cli("run", "mid.ipynb", "-o", output, "--html")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr, result.stderr
    html = tiny_disk / "out.html"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: the HTML copy was not saved: cannot write '{html}': No space left on device"
    ], result.stderr
    assert "finished (finished) in" in result.stderr, result.stderr
    saved = nbformat.read(output, as_version=4)
    assert saved.metadata.nbsweep.status == "finished"
    assert [p.name for p in tiny_disk.iterdir()] == ["out.ipynb"], "no HTML, no temp file"
