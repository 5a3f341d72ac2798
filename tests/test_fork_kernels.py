"""Kernels forked from a template: each trial still gets a process that never ran user code,
with fresh random state, its own environment and working directory; where forking cannot
serve, kernels start as fresh interpreters and the agent says why once."""

from __future__ import annotations

import time

import pytest
from test_local_sweeps import Local

from nbsweep.fork_kernels import TEMPLATE_NAME

pytestmark = pytest.mark.kernel

ISOLATION = [
    ("x = 0", ["parameters"]),
    "import json, os, random\nimport numpy\nimport nbsweep",
    # A module-level counter: a kernel that inherited a used interpreter would count on.
    "json._nbsweep_counter = getattr(json, '_nbsweep_counter', 0) + 1\n"
    "parent = open(f'/proc/{os.getppid()}/comm').read().strip()\n"
    "nbsweep.log({'numpy_draw': float(numpy.random.rand()), 'random_draw': random.random(),\n"
    "             'pid': os.getpid(), 'counter': json._nbsweep_counter, 'x': x,\n"
    "             'cwd': os.getcwd(), 'run': os.environ['WANDB_RUN_ID'], 'parent': parent})",
]


@pytest.fixture
def local(tmp_path, request):
    runner = Local(tmp_path, f"fork-{request.node.name}-{time.time_ns()}")
    yield runner
    runner.finish(timeout=10)


def _trials(local, *options: str) -> tuple[list[dict], str]:
    sweep = local.sweep("method: grid\nparameters:\n  x: {values: [1, 2, 3]}\n", ISOLATION)
    result = local("agent", f"local:{sweep}", "--no-wandb", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = local.status(sweep)["runs"]
    return [{**run["summary"], "run_id": run["run_id"]} for run in runs], result.stderr


def test_each_forked_kernel_is_a_fresh_trial(local, tmp_path):
    found, stderr = _trials(local)
    assert [s["parent"] for s in found] == [TEMPLATE_NAME] * 3, "forked from the template"
    assert len({s["pid"] for s in found}) == 3
    assert len({s["numpy_draw"] for s in found}) == 3, "numpy's global state is reseeded"
    assert len({s["random_draw"] for s in found}) == 3
    assert [s["counter"] for s in found] == [1, 1, 1], "no trial sees another's state"
    assert all(s["cwd"] == str(tmp_path) for s in found)
    assert [s["run"] for s in found] == [s["run_id"] for s in found], "the trial's environment"
    assert "fresh interpreters" not in stderr


@pytest.mark.parametrize(
    "options,reason",
    [(("--kernel-start", "exec"), None), (("--preload-cuda",), "CUDA cannot cross a fork")],
    ids=["exec", "cuda"],
)
def test_where_forking_cannot_serve_kernels_are_interpreters(local, options, reason):
    found, stderr = _trials(local, *options)
    assert TEMPLATE_NAME not in {s["parent"] for s in found}
    assert len({s["numpy_draw"] for s in found}) == 3 and [s["counter"] for s in found] == [1] * 3
    if reason is None:
        assert "fresh interpreters" not in stderr
    else:
        assert stderr.count(f"kernels start as fresh interpreters: {reason}") == 1
