"""Kernels forked from a template: each trial still gets a process that never ran user code,
with fresh random state, its own environment and working directory; where forking cannot
serve, kernels start as fresh interpreters and the agent says why once."""

from __future__ import annotations

import pytest

from nbsweep.kernel.fork import TEMPLATE_NAME

pytestmark = pytest.mark.kernel


def _in_template(library: str) -> str:
    """Python that says whether the kernel's parent (its template) has loaded ``library``."""
    return f"{library!r} in open(f'/proc/{{os.getppid()}}/maps').read()"


ISOLATION = [
    "import json, os, random\nimport numpy\nimport nbsweep\nimport threadpoolctl",
    ("x = 0", ["parameters"]),
    # A module-level counter: a kernel that inherited a used interpreter would count on.
    "json._nbsweep_counter = getattr(json, '_nbsweep_counter', 0) + 1\n"
    "parent = open(f'/proc/{os.getppid()}/comm').read().strip()\n"
    "blas = [i['num_threads'] for i in threadpoolctl.threadpool_info()\n"
    "        if i['user_api'] == 'blas']\n"
    "nbsweep.log({'numpy_draw': float(numpy.random.rand()), 'random_draw': random.random(),\n"
    "             'pid': os.getpid(), 'counter': json._nbsweep_counter, 'x': x,\n"
    "             'cwd': os.getcwd(), 'run': os.environ['WANDB_RUN_ID'], 'parent': parent,\n"
    f"             'preloaded': {_in_template('_multiarray_umath')}, 'blas_threads': blas[0],\n"
    "             'cores': len(os.sched_getaffinity(0))})",
]


def _trials(local, *options: str, **env: str) -> tuple[list[dict], str]:
    sweep = local.sweep("method: grid\nparameters:\n  x: {values: [1, 2, 3]}\n", ISOLATION)
    result = local("agent", f"local:{sweep}", "--no-wandb", *options, **env)
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
    # numpy stays in the template (its BLAS loaded with one thread, so a fork is safe), and
    # each kernel gets the BLAS threads a fresh interpreter would start.
    assert all(s["preloaded"] for s in found), stderr
    assert "run the preload each" not in stderr
    assert [s["blas_threads"] for s in found] == [s["cores"] for s in found]


def test_blas_threads_follow_the_trials_environment(local):
    found, stderr = _trials(local, OPENBLAS_NUM_THREADS="1")
    assert all(s["preloaded"] for s in found), stderr
    assert [s["blas_threads"] for s in found] == [1, 1, 1]


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


def test_torch_generators_are_reseeded_in_each_kernel(local):
    pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    sweep = local.sweep(
        "method: grid\nparameters:\n  x: {values: [1, 2, 3]}\n",
        [
            "import os\nimport torch\nimport nbsweep",
            ("x = 0", ["parameters"]),
            "nbsweep.log({'draw': torch.rand(1).item(),\n"
            f"             'preloaded': {_in_template('libtorch')}}})",
        ],
    )
    result = local("agent", f"local:{sweep}", "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    found = [run["summary"] for run in local.status(sweep)["runs"]]
    assert all(s["preloaded"] for s in found), result.stderr
    assert len({s["draw"] for s in found}) == 3, "torch's default generator is reseeded"


# The first trial adds an import to the notebook, as a user editing it mid-sweep would.
EDITED_MID_SWEEP = [
    "import json, os\nimport nbsweep",
    ("x = 0", ["parameters"]),
    "if x == 1:\n"
    "    import nbformat\n"
    "    edited = nbformat.read('nb.ipynb', as_version=4)\n"
    "    edited.cells[0].source += '\\nimport sqlite3'\n"
    "    nbformat.write(edited, 'nb.ipynb')\n"
    "parent = open(f'/proc/{os.getppid()}/comm').read().strip()\n"
    f"nbsweep.log({{'x': x, 'preloaded': {_in_template('_sqlite3')}, 'template': os.getppid(),\n"
    "             'parent': parent})",
]


def test_a_changed_notebook_gets_a_new_template(local):
    grid = "method: grid\nparameters:\n  x: {values: [1, 2, 3, 4]}\n"
    sweep = local.sweep(grid, EDITED_MID_SWEEP)
    result = local("agent", f"local:{sweep}", "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    found = sorted((run["summary"] for run in local.status(sweep)["runs"]), key=lambda s: s["x"])
    first, *_, third, fourth = found
    assert first["parent"] == third["parent"] == fourth["parent"] == TEMPLATE_NAME
    assert not first["preloaded"]
    assert third["preloaded"] and fourth["preloaded"], "the new import is in the new template"
    assert third["template"] == fourth["template"] != first["template"]
    assert "fresh interpreters" not in result.stderr
