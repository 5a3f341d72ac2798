"""`nbsweep agent` against the W&B-protocol test server: real agent processes, real kernels,
the real wandb client, the process table."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from helpers import executed, run_cmd, user_history, wait_for_file, write_notebook
from wandb_server import stop_after_rows, wandb_env

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

PLAIN = [
    "import nbsweep, os",
    ("lr = 0.1\nepochs = 3\nopt = {'name': 'adam', 'beta1': 0.9}", ["parameters"]),
    "for epoch in range(epochs):\n    nbsweep.log({'loss': lr * epoch, 'epoch': epoch})\n"
    "seen = {'lr': lr, 'epochs': epochs, 'opt': opt,\n"
    "        'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), 'run': os.environ['WANDB_RUN_ID']}\n"
    "print(seen)\nfinal_loss = lr * (epochs - 1)",
]

BLOG = [
    "import wandb, nbsweep",
    "config = dict(lr=0.1, epochs=3, opt=dict(name='adam', beta1=0.9))",
    "run = wandb.init(config=config)\nfor epoch in range(config['epochs']):\n"
    "    wandb.log({'loss': config['lr'] * epoch, 'beta1': config['opt']['beta1']})\n"
    "nbsweep.log({'from_nbsweep_log': 1})\nprint(dict(wandb.config))",
    "assert config['lr'] < 1, 'lr too large'",
    "wandb.finish()",
]


def printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_three_trials_of_a_notebook_that_never_calls_wandb(agent, server, tmp_path):
    write_notebook(tmp_path / "train.ipynb", PLAIN)
    sweep = agent.sweep(
        "train.ipynb",
        [
            run_cmd("r1", lr=0.5),
            run_cmd("r2", epochs=2, opt={"beta1": 0.1}),
            run_cmd("r3", lr=1, epochs=1),
            {"type": "exit"},
        ],
    )
    result = agent.run(sweep, "--metric", "final_loss")
    assert result.returncode == 0, result.stderr
    runs = server.runs
    assert sorted(runs) == ["r1", "r2", "r3"], result.stderr[-3000:]
    assert runs["r1"].user_config == {"lr": 0.5}
    assert runs["r2"].user_config == {"epochs": 2, "opt": {"beta1": 0.1}}
    assert user_history(runs["r2"]) == [{"loss": 0.0, "epoch": 0}, {"loss": 0.1, "epoch": 1}]
    assert runs["r1"].summary["final_loss"] == 1.0
    assert runs["r3"].summary["nbsweep/status"] == "finished"
    for run_id, run in runs.items():
        assert run.sweep == sweep and run.exitcode == 0 and run.complete
        assert "train.ipynb" in run.files, run.files.keys()
        saved = executed(tmp_path, sweep, run_id, "train.ipynb")
        assert (
            nbformat.reads(run.files["train.ipynb"].decode(), as_version=4).cells[3].source
            == saved.cells[3].source
        )
    seen = printed(executed(tmp_path, sweep, "r2", "train.ipynb").cells[3])
    assert "'opt': {'name': 'adam', 'beta1': 0.1}" in seen and "'run': 'r2'" in seen
    assert "r3" in (tmp_path / "wandb" / f"sweep-{sweep}" / "config-r3.yaml").name


def test_a_notebook_that_opens_its_own_run(agent, server, tmp_path):
    write_notebook(tmp_path / "blog.ipynb", BLOG)
    sweep = agent.sweep(
        "blog.ipynb",
        [
            run_cmd("r1", lr=0.5, opt={"beta1": 0.5}),
            run_cmd("r2", lr=2.0),
            run_cmd("r3", epochs=1),
            {"type": "exit"},
        ],
    )
    result = agent.run(sweep)
    assert result.returncode == 0, result.stderr
    runs = server.runs
    # wandb.config and the notebook's own config dict agree with the sweep.
    assert runs["r1"].user_config == {"lr": 0.5, "epochs": 3, "opt": {"name": "adam", "beta1": 0.5}}
    assert user_history(runs["r1"])[:3] == [
        {"loss": 0.0, "beta1": 0.5},
        {"loss": 0.5, "beta1": 0.5},
        {"loss": 1.0, "beta1": 0.5},
    ]
    assert user_history(runs["r1"])[3] == {"from_nbsweep_log": 1}
    assert runs["r1"].exitcode == 0
    assert runs["r2"].exitcode == 1, "a failing cell ends the notebook's own run as failed"
    assert runs["r3"].exitcode == 0 and len(user_history(runs["r3"])) == 2
    assert "blog.ipynb" in runs["r1"].files, "the executed notebook is attached"
    assert executed(tmp_path, sweep, "r2", "blog.ipynb").metadata.nbsweep["status"] == "failed"


def test_stop_mid_trial_then_the_next_trial_runs(agent, server, tmp_path):
    write_notebook(
        tmp_path / "slow.ipynb",
        [
            "import nbsweep, time",
            ("steps = 400", ["parameters"]),
            "for step in range(steps):\n    nbsweep.log({'step_loss': 1.0 / (step + 1)})\n"
            "    time.sleep(0.1)",
            "print('done')",
        ],
    )
    sweep = agent.sweep(
        "slow.ipynb",
        [run_cmd("r1"), stop_after_rows("r1", 3), run_cmd("r2", steps=2), {"type": "exit"}],
    )
    started = time.monotonic()
    result = agent.run(sweep, "--stop-grace", "2")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert "run r1: stop requested by the sweep" in result.stderr
    stopped = executed(tmp_path, sweep, "r1", "slow.ipynb")
    assert stopped.metadata.nbsweep["status"] == "stopped"
    assert stopped.cells[2].outputs[-1].ename == "KeyboardInterrupt"
    assert stopped.cells[3].execution_count is None
    assert server.runs["r1"].exitcode == 130
    assert server.runs["r1"].summary["nbsweep/status"] == "stopped"
    assert server.runs["r2"].exitcode == 0


def _wait_for_trial(process: subprocess.Popen, tmp_path: Path) -> None:
    wait_for_file(tmp_path / "started.flag", process)


LONG = [
    ("seconds = 3.0", ["parameters"]),
    "import pathlib, time\npathlib.Path('started.flag').touch()\nend = time.time() + seconds\n"
    "while time.time() < end:\n    time.sleep(0.05)\nprint('finished')",
]


@pytest.mark.parametrize(
    "signals,code,status",
    [
        ([signal.SIGINT], 130, "finished"),
        ([signal.SIGINT, signal.SIGINT], 130, "stopped"),
        ([signal.SIGTERM], 130, "stopped"),
    ],
    ids=["ctrl-c-once", "ctrl-c-twice", "sigterm"],
)
def test_signals(agent, server, tmp_path, signals, code, status):
    write_notebook(tmp_path / "long.ipynb", LONG)
    sweep = agent.sweep("long.ipynb", [run_cmd("r1", seconds=4.0), run_cmd("r2"), {"type": "exit"}])
    process = agent.start(sweep, "--stop-grace", "2")
    _wait_for_trial(process, tmp_path)
    for signum in signals:
        process.send_signal(signum)
        time.sleep(0.3)  # scenario: signals apart, as a person sends them
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert executed(tmp_path, sweep, "r1", "long.ipynb").metadata.nbsweep["status"] == status
    assert "r2" not in server.runs, "no new trial after an interrupt"


def test_failure_guard(agent, server, tmp_path):
    write_notebook(tmp_path / "broken.ipynb", [("x = 1", ["parameters"]), "raise MemoryError"])
    sweep = agent.sweep("broken.ipynb", [run_cmd(f"r{i}", x=i) for i in range(6)])
    result = agent.run(sweep, "--max-consecutive-failures", "2")
    assert result.returncode == 1
    assert "2 trials failed in a row (--max-consecutive-failures 2)" in result.stderr
    assert sorted(server.runs) == ["r0", "r1"]
    assert all(run.exitcode == 1 for run in server.runs.values())


def test_server_errors_are_retried(agent, server, tmp_path):
    write_notebook(tmp_path / "train.ipynb", PLAIN)
    sweep = agent.sweep("train.ipynb", [run_cmd("r1", epochs=1), {"type": "exit"}])
    server.fail_next("Heartbeat", status=500, times=2)
    server.fail_next("CreateAgent", status=503, times=1)
    result = agent.run(sweep)
    assert result.returncode == 0, result.stderr
    assert "answered 503; retrying" in result.stderr
    assert server.runs["r1"].exitcode == 0


def test_client_errors_are_final(agent, server, tmp_path):
    write_notebook(tmp_path / "train.ipynb", PLAIN)
    sweep = agent.sweep("train.ipynb", [])
    server.fail_next("CreateAgent", status=400, times=1)
    result = agent.run(sweep)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: CreateAgent:")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "program,message",
    [
        ("train.py", "is not a notebook"),
        ("missing.ipynb", "not found"),
    ],
)
def test_program_must_be_a_notebook(agent, tmp_path, program, message):
    sweep = agent.sweep(program, [])
    result = agent.run(sweep)
    assert result.returncode == 2 and message in result.stderr


def test_one_agent_per_gpu(agent, server, tmp_path):
    write_notebook(tmp_path / "train.ipynb", PLAIN)
    sweep = agent.sweep("train.ipynb", [run_cmd(f"r{i}", epochs=1) for i in range(4)])
    result = agent.run(sweep, "--gpus", "0,1", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(server.runs) == ["r0", "r1", "r2", "r3"]
    devices = {}
    for run_id in server.runs:
        text = printed(executed(tmp_path, sweep, run_id, "train.ipynb").cells[3])
        devices[run_id] = text.split("'cuda': ")[1].split(",")[0]
    assert sorted(devices.values()) == ["'0'", "'0'", "'1'", "'1'"]
    assert "[gpu0] " in result.stderr and "[gpu1] " in result.stderr
    assert len(server.agents) == 2


def test_gpus_interrupted_forwards_the_signal(agent, server, tmp_path):
    write_notebook(tmp_path / "long.ipynb", LONG)
    sweep = agent.sweep("long.ipynb", [run_cmd("r1", seconds=30.0), run_cmd("r2", seconds=30.0)])
    process = agent.start(sweep, "--workers", "2", "--stop-grace", "1")
    _wait_for_trial(process, tmp_path)
    time.sleep(1.0)  # scenario: both workers under way (the second's trial may not have begun)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    statuses = {
        run_id: executed(tmp_path, sweep, run_id, "long.ipynb").metadata.nbsweep["status"]
        for run_id in ("r1", "r2")
        if (tmp_path / "nbsweep-runs" / sweep / run_id).exists()
    }
    assert statuses and set(statuses.values()) == {"stopped"}


@pytest.mark.slow  # the real `wandb agent` polls every 5 s
def test_plain_wandb_agent_runs_nbsweep_run(server, tmp_path):
    """The `command:` route: the real `wandb agent` CLI with `nbsweep run ${program} ${args}`."""
    write_notebook(tmp_path / "train.ipynb", PLAIN)
    sweep = server.add_sweep(
        {
            "program": "train.ipynb",
            "method": "grid",
            "command": ["nbsweep", "run", "${program}", "${args}", "--metric", "final_loss"],
            "parameters": {"lr": {"values": [0.5]}},
        },
        project="p",
    )
    server.script(sweep, [run_cmd("r1", lr=0.5, opt={"beta1": 0.2}), {"type": "exit"}])
    env = wandb_env(server, tmp_path, project="p")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "agent", f"{server.entity}/p/{sweep}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    saved = executed(tmp_path, sweep, "r1", "train.ipynb")
    assert "'lr': 0.5" in printed(saved.cells[3])
    assert "'opt': {'name': 'adam', 'beta1': 0.2}" in printed(saved.cells[3])
    run = server.runs["r1"]
    assert run.user_config == {"lr": 0.5, "opt": {"beta1": 0.2}}
    assert run.sweep == sweep and run.exitcode == 0
    assert user_history(run) == [
        {"loss": 0.0, "epoch": 0},
        {"loss": 0.5, "epoch": 1},
        {"loss": 1.0, "epoch": 2},
    ]
    assert run.summary["final_loss"] == 1.0 and "train.ipynb" in run.files


def test_a_dead_kernel_does_not_leave_the_notebooks_run_open(agent, server, tmp_path):
    write_notebook(
        tmp_path / "dies.ipynb",
        [
            ("lr = 0.1", ["parameters"]),
            "import wandb, os\nwandb.init()\nwandb.log({'loss': lr})",
            "os._exit(9)",
        ],
    )
    sweep = agent.sweep("dies.ipynb", [run_cmd("r1", lr=0.3), {"type": "exit"}])
    result = agent.run(sweep)
    assert result.returncode == 0, result.stderr
    run = server.runs["r1"]
    assert run.exitcode == 1 and run.complete
    assert run.summary["nbsweep/status"] == "failed"
    assert "dies.ipynb" in run.files


def test_values_the_notebook_refuses_fail_the_trial_not_the_agent(agent, server, tmp_path):
    write_notebook(tmp_path / "train.ipynb", PLAIN)
    sweep = agent.sweep("train.ipynb", [run_cmd(f"r{i}", lrr=i) for i in range(1, 4)])
    result = agent.run(sweep, "--max-consecutive-failures", "2")
    assert result.returncode == 1
    assert "unknown parameter 'lrr' (did you mean 'lr'?)" in result.stderr
    assert "2 trials failed in a row" in result.stderr
    assert sorted(server.runs) == ["r1", "r2"]
    assert all(run.exitcode == 1 for run in server.runs.values())
