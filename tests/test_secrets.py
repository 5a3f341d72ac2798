"""Secrets never leave a trial: not in a saved file (notebook, HTML, side files, metrics
JSON, the store, the offline W&B run), not in what nbsweep prints, not on a command line.

Each case puts a secret from the environment through one channel a hostile probe found, then
looks for its bytes (and each of its halves) in every file under the test's folder and in
the captured stdout and stderr."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import CliRun, Local, write_notebook

pytestmark = pytest.mark.kernel

SECRET = "NbswLeak-4f9c1e7a2b6d8e0f3a5c7b9d1e2f4a6c"
STREAM_LIMIT = 1 << 20  # ExecutionOptions.stream_limit


def pieces(secret: str) -> list[bytes]:
    """The secret and each half: half a key is still a leak."""
    half = len(secret) // 2
    return [part.encode() for part in (secret, secret[:half], secret[half:])]


def assert_nowhere(secret: str, folder: Path, *said: str) -> None:
    for text in said:
        for piece in pieces(secret):
            assert piece.decode() not in text, f"printed: ...{piece.decode()}..."
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for piece in pieces(secret):
                assert piece not in data, f"{path.relative_to(folder)} holds {piece!r}"


def run_case(cli: CliRun, tmp_path: Path, cells: list, *args: str, **env: str):
    nb = write_notebook(tmp_path / "nb.ipynb", cells)
    return cli("run", nb, "-o", "out/out.ipynb", "--log-output", "--html", *args, **env)


ENV = {"MY_TOKEN": SECRET}

CASES = {
    # Each output is one character: too short to match alone.
    "one-character-per-flush": (
        [
            "import os\nfor c in os.environ['MY_TOKEN']:\n    print(c, end='', flush=True)\n"
            "print()\nimport sys\nfor c in os.environ['MY_TOKEN']:\n"
            "    print(c, end='', file=sys.stderr, flush=True)"
        ],
        (),
        ENV,
    ),
    "rich-outputs": (
        [
            "import os\nfrom IPython.display import JSON, SVG, Javascript, display\n"
            "t = os.environ['MY_TOKEN']\n"
            "display(JSON({'key': t, t: [1, {'deep': t}]}))\n"
            "display(SVG(f'<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{t}</text></svg>'))\n"
            "display(Javascript(f'console.log(\"{t}\")'))\n"
            "display({'application/vnd.x+json': {'nested': [t]}}, raw=True, metadata={'m': t})\n"
            "t"
        ],
        (),
        ENV,
    ),
    "metric-values-and-keys": (
        [
            "import os, nbsweep\nt = os.environ['MY_TOKEN']\n"
            "nbsweep.log({'tag': t, 'loss': 1.0})\nnbsweep.log({t: 2.0})"
        ],
        ("--metric", "t", "--metrics-json", "out/metrics.json"),
        ENV,
    ),
    "split-by-the-stream-limit": (
        [f"import os\nprint('x' * {STREAM_LIMIT - 20} + os.environ['MY_TOKEN'] + 'y' * 100)"],
        (),
        ENV,
    ),
    "database-urls-in-the-environment": (
        ["import os\nprint(os.environ['DATABASE_URL'], os.environ['NBSWEEP_STORE'])"],
        (),
        {
            "DATABASE_URL": f"postgresql://me:{SECRET}@db.example/app",
            "NBSWEEP_STORE": f"postgresql://db.example/s?user=me&password={SECRET}",
        },
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_secret_reaches_no_file_and_no_output(cli, tmp_path, case):
    cells, args, env = CASES[case]
    result = run_case(cli, tmp_path, cells, *args, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "***" in result.stdout + result.stderr + (tmp_path / "out/out.ipynb").read_text()
    assert_nowhere(SECRET, tmp_path, result.stdout, result.stderr)


def test_a_kernel_that_prints_a_secret_as_it_dies_is_reported_redacted(cli, tmp_path):
    spec = tmp_path / "jupyter" / "kernels" / "leaky"
    spec.mkdir(parents=True)
    dies = "import os, sys; print('no luck', os.environ['MY_TOKEN']); sys.exit(3)"
    argv = [sys.executable, "-c", dies]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "leaky"}))
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    result = cli(
        "run", nb, "--kernel", "leaky", JUPYTER_PATH=str(tmp_path / "jupyter"), MY_TOKEN=SECRET
    )
    assert result.returncode == 2
    assert "it last wrote: no luck ***" in result.stderr
    assert_nowhere(SECRET, tmp_path, result.stdout, result.stderr)


def test_a_local_sweeps_store_and_offline_run_get_no_secret(tmp_path, request):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    local = Local(tmp_path, f"secrets-{request.node.name}-{time.time_ns()}")
    try:
        sweep_id = local.sweep(
            "method: grid\nmetric: {name: loss, goal: minimize}\n"
            "parameters:\n  lr: {values: [0.1]}\n",
            [
                ("lr = 0.5", ["parameters"]),
                "import os, nbsweep\nt = os.environ['MY_TOKEN']\n"
                "nbsweep.log({'tag': t, 'loss': lr})\nnbsweep.log({t: 2.0, 'loss': lr})",
            ],
        )
        agent = local("agent", f"local:{sweep_id}", "--count", "1", MY_TOKEN=SECRET)
        status = local("status", f"local:{sweep_id}", "--json")
    finally:
        local.finish(timeout=10)
    assert agent.returncode == 0, agent.stderr[-3000:]
    assert list(tmp_path.glob("wandb/offline-run-*/*.wandb")), "an offline run was written"
    assert "tag=***" in agent.stderr
    assert_nowhere(SECRET, tmp_path, agent.stdout, agent.stderr, status.stdout)


def test_workers_get_a_database_url_by_environment_not_on_their_command_line(cli, tmp_path):
    url = f"postgresql://me:{SECRET}@127.0.0.1:9/sweeps"
    parent = cli.start("agent", "local:abcd1234", "--workers", "2", "--store", url, "--no-wandb")
    seen: set[str] = set()
    watched = psutil.Process(parent.pid)
    # The parent was given the URL on its own command line (by this test); a child caught
    # between fork and exec still shows the parent's (with its --workers), not its own.
    while parent.poll() is None:
        try:
            for child in watched.children(recursive=True):
                line = " ".join(child.cmdline())
                if "--workers" not in line:
                    seen.add(line)
        except psutil.Error:
            pass
        time.sleep(0.01)
    stdout, stderr = parent.communicate()
    assert any("nbsweep agent local:abcd1234" in line for line in seen), seen
    assert_nowhere(SECRET, tmp_path, stdout, stderr, *seen)


def peak_resident_mb(process) -> float:
    """The peak resident set of a running process (``VmHWM``), read until it exits."""
    status, peak = Path(f"/proc/{process.pid}/status"), 0
    while process.poll() is None:
        try:
            lines = status.read_text().splitlines()
            peak = max([peak, *(int(line.split()[1]) for line in lines if "VmHWM" in line)])
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return peak / 1000


def test_a_huge_print_goes_to_the_side_file_without_nbsweep_holding_it(cli, tmp_path):
    # 100 MB took nbsweep 350 MB as one message (bytes, text and parsed text at once);
    # in 1 Mi pieces it held 131 MB. benchmarks/huge_output.py measures 200 and 500 MB.
    nb = write_notebook(tmp_path / "nb.ipynb", ["print('x' * 100_000_000)"])
    process = cli.start("run", nb, "-o", "out/out.ipynb")
    peak = peak_resident_mb(process)
    assert process.wait() == 0, process.stderr.read()[-3000:]
    assert (tmp_path / "out/out.cell0.stdout.txt").stat().st_size > 98_000_000
    assert peak < 250, f"nbsweep held {peak:.0f} MB"
