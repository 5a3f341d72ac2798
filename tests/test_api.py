"""nbsweep from Python: run_notebook, sweep and agent, from a script, a thread, a running
event loop and a real running kernel (a Jupyter cell), with real kernels."""

from __future__ import annotations

import _thread
import asyncio
import json
import os
import signal
import sys
import threading
import time
import uuid

import nbformat
import psutil
import pytest
from helpers import MARKER_ENV, wait_until_gone, write_notebook

import nbsweep
from nbsweep.errors import TrialFailed, TrialStopped

pytestmark = pytest.mark.kernel

NOTEBOOK = [
    ("lr = 0.1\nconfig = {'optimizer': {'name': 'sgd', 'momentum': 0.0}}", ["parameters"]),
    "import nbsweep\nnbsweep.log({'lr_seen': lr, 'momentum': config['optimizer']['momentum']})\n"
    "print('lr', lr)",
]


@pytest.fixture
def marked(monkeypatch):
    """Every kernel started here inherits a marker: the test checks none is left."""
    marker = f"api-{uuid.uuid4().hex}"
    monkeypatch.setenv(MARKER_ENV, marker)
    yield marker
    assert wait_until_gone(marker, timeout=10) == []


def _outputs(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_run_notebook_injects_and_returns_the_result(tmp_path, marked):
    notebook = write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    result = nbsweep.run_notebook(
        notebook, {"lr": 0.5, "config.optimizer.momentum": 0.9}, output=tmp_path / "out.ipynb"
    )
    assert result.status == "finished"
    assert result.metrics.summary() == {"lr_seen": 0.5, "momentum": 0.9}
    assert result.output == tmp_path / "out.ipynb" and "lr 0.5" in _outputs(result.output)


def test_a_failed_trial_raises_with_its_saved_notebook(tmp_path, marked):
    notebook = write_notebook(tmp_path / "nb.ipynb", [("x = 1", ["parameters"]), "1 / (x - 1)"])
    with pytest.raises(TrialFailed, match="ZeroDivisionError") as raised:
        nbsweep.run_notebook(notebook, output=tmp_path / "out.ipynb")
    assert raised.value.result.status == "failed"
    assert raised.value.result.output.exists()
    result = nbsweep.run_notebook(notebook, {"x": 2}, raise_on_failure=False)
    assert result.status == "finished"


def test_bad_parameters_are_a_usage_error(tmp_path):
    notebook = write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    with pytest.raises(nbsweep.errors.UsageError, match="mapping"):
        nbsweep.run_notebook(notebook, [("lr", 1)])  # type: ignore[arg-type]


def test_from_a_thread_and_from_a_running_event_loop(tmp_path, marked):
    notebook = write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    found: dict[str, object] = {}

    def in_thread() -> None:
        found["thread"] = nbsweep.run_notebook(notebook, {"lr": 0.2}).metrics.summary()

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(120)

    async def in_loop() -> None:  # what a Jupyter cell is: code on a running loop
        found["loop"] = nbsweep.run_notebook(notebook, {"lr": 0.3}).metrics.summary()

    asyncio.run(in_loop())
    assert found["thread"] == {"lr_seen": 0.2, "momentum": 0.0}
    assert found["loop"] == {"lr_seen": 0.3, "momentum": 0.0}


def test_from_inside_a_running_kernel(tmp_path, marked):
    inner = write_notebook(tmp_path / "inner.ipynb", NOTEBOOK)
    outer = write_notebook(
        tmp_path / "outer.ipynb",
        [
            f"import nbsweep\nresult = nbsweep.run_notebook({str(inner)!r}, {{'lr': 0.7}},\n"
            f"    output={str(tmp_path / 'inner-out.ipynb')!r})\n"
            "print(result.status, result.metrics.summary()['lr_seen'])"
        ],
    )
    result = nbsweep.run_notebook(outer, output=tmp_path / "outer-out.ipynb")
    assert "finished 0.7" in _outputs(result.output)
    assert "lr 0.7" in _outputs(tmp_path / "inner-out.ipynb")


def test_ctrl_c_stops_the_trial_and_keeps_the_partial_notebook(tmp_path, marked):
    flag = tmp_path / "sleeping"
    notebook = write_notebook(
        tmp_path / "nb.ipynb",
        [
            ("x = 0", ["parameters"]),
            "print('started', flush=True)",
            f"import time\nopen({str(flag)!r}, 'w').close()\ntime.sleep(60)",
        ],
    )

    def interrupt_once_sleeping() -> None:
        # Not at a fixed time: under load the kernel may still be starting then, and an
        # xdist worker ignores SIGINT until the trial's handler is in place.
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if flag.exists():
            _thread.interrupt_main()

    interrupter = threading.Thread(target=interrupt_once_sleeping, daemon=True)
    interrupter.start()
    started = time.monotonic()
    # Ctrl-C in a process whose SIGINT is Python's own: in a CI worker an earlier test
    # (not found yet) left another handler, and the interrupt never reached the trial.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TrialStopped) as raised:
            nbsweep.run_notebook(notebook, output=tmp_path / "out.ipynb", stop_grace=2)
    finally:
        signal.signal(signal.SIGINT, previous)
    interrupter.join()
    assert time.monotonic() - started < 30
    assert raised.value.result.status == "stopped"
    assert "started" in _outputs(tmp_path / "out.ipynb")


def test_sweep_and_agent_run_a_local_sweep(tmp_path, marked, monkeypatch):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    monkeypatch.chdir(tmp_path)  # the agent's runs folder; the test process's own cwd
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    store = tmp_path / "store.db"
    sweep_id = nbsweep.sweep(
        {
            "program": "nb.ipynb",
            "method": "grid",
            "metric": {"name": "lr_seen", "goal": "maximize"},
            "parameters": {"lr": {"values": [0.1, 0.2, 0.3]}},
        },
        store=store,
    )
    assert sweep_id.startswith("local:")
    code = nbsweep.agent(sweep_id, store=store, count=2, report_to_wandb=False, progress=False)
    assert code == 0
    from nbsweep.local.store import Store

    with Store.open(store) as opened:
        runs = opened.runs(sweep_id.removeprefix("local:"))
    assert sorted(run.summary["lr_seen"] for run in runs) == [0.1, 0.2]
    with pytest.raises(nbsweep.errors.SweepConfigError, match="method"):
        nbsweep.sweep({"program": "nb.ipynb", "parameters": {"lr": {"values": [1]}}}, store=store)


def test_import_nbsweep_stays_light():
    code = "import sys, nbsweep; print(json.dumps(sorted(sys.modules)))"
    output = psutil.Popen(
        [sys.executable, "-c", "import json\n" + code], stdout=-1, env=dict(os.environ)
    ).communicate()[0]
    loaded = set(json.loads(output))
    assert not loaded & {"wandb", "nbclient", "jupyter_client", "zmq", "click", "numpy"}
