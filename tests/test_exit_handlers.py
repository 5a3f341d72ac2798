"""A finished notebook's kernel ends as a Python program ends: its exit handlers run, its
threads are joined and its unclosed files flushed, whether the kernel was forked from a
template or exec'd, under `nbsweep run` or `nbsweep agent`. W&B's own tutorials rely on
that to close a run they never finish. The executed notebook is among the files of the run
the notebook opened itself, offline and online. Real kernels, real processes, the process
table (the fixtures' ``finish``)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from helpers import run_cmd, write_notebook

pytestmark = pytest.mark.kernel

EXIT_WORK = [
    ("x = 0", ["parameters"]),
    # What the kernel was forked from (or not), for the test to know which start it checks.
    "import atexit, os, pathlib, threading, time\n"
    "parent = pathlib.Path(f'/proc/{os.getppid()}/comm').read_text().strip()\n"
    "def at_exit():\n"
    "    time.sleep(0.3)  # as wandb's finish takes a while\n"
    "    pathlib.Path(f'atexit-{x}.txt').write_text(parent)\n"
    "atexit.register(at_exit)\n"
    "def later():\n"
    "    time.sleep(0.5)\n"
    "    pathlib.Path(f'thread-{x}.txt').write_text('done')\n"
    "threading.Thread(target=later).start()",
]
UNCLOSED = "log = open(f'unclosed-{x}.txt', 'w')\nlog.write('x' * 100)"
TEMPLATE = "nbsweep-forker"  # nbsweep.kernel.fork.TEMPLATE_NAME


def assert_exit_work_done(folder: Path, xs: list[int], parent: str | None, unclosed: bool):
    """``parent``: the template's name for forked kernels, None for exec'd ones."""
    for x in xs:
        marker = folder / f"atexit-{x}.txt"
        assert marker.exists(), f"trial x={x}: its exit handler did not run"
        if parent is None:
            assert marker.read_text() != TEMPLATE, "an exec'd kernel, not a forked one"
        else:
            assert marker.read_text() == parent, "a forked kernel"
        assert (folder / f"thread-{x}.txt").read_text() == "done", "its thread was joined"
        if unclosed:
            assert (folder / f"unclosed-{x}.txt").read_text() == "x" * 100, "flushed"


@pytest.mark.parametrize("unclosed", [False, True], ids=["no-teardown", "and-a-file"])
def test_nbsweep_run(cli, tmp_path, unclosed):
    write_notebook(tmp_path / "nb.ipynb", EXIT_WORK + [UNCLOSED] * unclosed)
    result = cli("run", "nb.ipynb", "--x=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exit_work_done(tmp_path, [1], None, unclosed)


@pytest.mark.parametrize("unclosed", [False, True], ids=["no-teardown", "and-a-file"])
@pytest.mark.parametrize("start", ["fork", "exec"])
def test_nbsweep_agent(local, tmp_path, start, unclosed):
    grid = "method: grid\nparameters:\n  x: {values: [1, 2]}\n"
    sweep = local.sweep(grid, EXIT_WORK + [UNCLOSED] * unclosed)
    result = local("agent", f"local:{sweep}", "--no-wandb", "--kernel-start", start)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fresh interpreters" not in result.stderr
    assert_exit_work_done(tmp_path, [1, 2], TEMPLATE if start == "fork" else None, unclosed)


# W&B's XGBoost tutorial: train() opens a run and never finishes it; wandb.agent's return
# does (as wandb's agent finishes the run its function opened), else the process's exit.
NEVER_FINISHED = [
    "import wandb",
    "sweep_config = {'method': 'grid', 'metric': {'name': 'loss', 'goal': 'minimize'},\n"
    "                'parameters': {'depth': {'values': [1, 2, 3]}}}",
    "def train():\n"
    "    config_defaults = {'depth': 5, 'rate': 0.5}\n"
    "    wandb.init(config=config_defaults)\n"
    "    config = wandb.config\n"
    "    for epoch in range(3):\n"
    "        wandb.log({'loss': config.rate * config.depth / (epoch + 1), 'epoch': epoch})",
    "sweep_id = wandb.sweep(sweep_config, project='exit-handlers')",
    "wandb.agent(sweep_id, train, count=3)",
]
NEVER_FINISHED_NO_AGENT = [*NEVER_FINISHED[:-1], "train()"]
# The notebook's own run, closed by itself (notebooks/wandb_tutorial.ipynb's way).
FINISHED_BY_ITSELF = [
    "import wandb",
    "def train():\n"
    "    with wandb.init(config={'depth': 5}):\n"
    "        wandb.log({'loss': wandb.config.depth / 10})",
    "wandb.agent('sweep', train, count=3)",
]


def offline_records(run_folder: Path) -> list:
    """The records of an offline run's ``.wandb`` file, read as wandb's own (LevelDB-style)
    log: a 7-byte header, then 32 KiB blocks of chunks, each with a 7-byte header of its
    own (CRC, length, type: full, first, middle or last)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_folder.glob("*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records, chunks, offset, block = [], b"", 7, 32 * 1024
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # too little of the block left for a header: padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunks += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
        elif kind == 0:
            break
    return records


def offline_runs(folder: Path) -> dict[str, Path]:
    """The offline runs under ``folder/wandb``, by run id."""
    return {run.name.rsplit("-", 1)[1]: run for run in (folder / "wandb").glob("offline-run-*")}


@pytest.mark.parametrize(
    "cells", [NEVER_FINISHED, NEVER_FINISHED_NO_AGENT], ids=["wandb.agent", "train()"]
)
def test_a_run_the_notebook_never_finishes_is_complete_offline(local, tmp_path, cells):
    sweep = local.sweep("method: grid\nparameters:\n  depth: {values: [1, 2, 3]}\n", cells)
    result = local("agent", f"local:{sweep}", "--kernel-start", "fork")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fresh interpreters" not in result.stderr
    run_ids = sorted(run["run_id"] for run in local.status(sweep)["runs"])
    runs = offline_runs(tmp_path)
    assert sorted(runs) == run_ids
    for run_id, folder in runs.items():
        records = offline_records(folder)
        kinds = [record.WhichOneof("record_type") for record in records]
        assert kinds.count("history") == 3, (run_id, kinds)
        assert "summary" in kinds and "exit" in kinds, (run_id, kinds)
        (exit_record,) = (record.exit for record in records if record.HasField("exit"))
        assert exit_record.exit_code == 0
        assert (folder / "files" / "nb.ipynb").exists(), "the executed notebook is attached"


def test_the_notebooks_own_offline_run_holds_the_executed_notebook(local, tmp_path):
    # In a folder of its own, as notebooks/wandb_tutorial.ipynb run from the repository:
    # its kernel, and so its own run, is there; the agent is not.
    write_notebook(tmp_path / "nbs" / "nb.ipynb", FINISHED_BY_ITSELF)
    (tmp_path / "sweep.yaml").write_text(
        "program: nbs/nb.ipynb\nmethod: grid\nparameters:\n  depth: {values: [1, 2]}\n"
    )
    created = local("sweep", "--local", "sweep.yaml")
    assert created.returncode == 0, created.stderr
    sweep = created.stdout.split()[3]
    result = local("agent", f"local:{sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = offline_runs(tmp_path / "nbs")
    assert sorted(runs) == sorted(run["run_id"] for run in local.status(sweep)["runs"])
    for run_id, folder in runs.items():
        attached = folder / "files" / "nb.ipynb"
        assert attached.exists(), sorted(p.name for p in (folder / "files").iterdir())
        saved = tmp_path / "nbsweep-runs" / sweep / run_id / "nb.ipynb"
        assert attached.read_bytes() == saved.read_bytes()


@pytest.mark.parametrize(
    "cells",
    [NEVER_FINISHED, NEVER_FINISHED_NO_AGENT, FINISHED_BY_ITSELF],
    ids=["wandb.agent", "train()", "itself"],
)
@pytest.mark.e2e
def test_the_notebooks_own_online_run_gets_the_executed_notebook(agent, server, tmp_path, cells):
    write_notebook(tmp_path / "nb.ipynb", cells)
    commands = [run_cmd("r1", depth=2), run_cmd("r2", depth=3), {"type": "exit"}]
    sweep = agent.sweep("nb.ipynb", commands)
    result = agent.run(sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    for run_id in ("r1", "r2"):
        run = server.runs[run_id]
        assert run.exitcode == 0 and run.complete, run_id
        assert "nb.ipynb" in run.files, (run_id, sorted(run.files))
