import pytest

from nbsweep.cli.agent import without_fanout_options
from nbsweep.errors import UsageError
from nbsweep.sweeping.workers import combined_exit_code, cpu_workers, gpu_workers


def test_gpu_lists():
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in gpu_workers("0, 2", {})] == ["0", "2"]
    assert [w.label for w in gpu_workers("all", {"CUDA_VISIBLE_DEVICES": "3,5"})] == [
        "gpu3",
        "gpu5",
    ]
    with pytest.raises(UsageError, match="distinct GPU ids"):
        gpu_workers("1,1", {})
    with pytest.raises(UsageError, match="found no GPU"):
        gpu_workers("all", {"CUDA_VISIBLE_DEVICES": ""})
    assert [w.label for w in cpu_workers(2)] == ["worker0", "worker1"]


def test_exit_codes_reflect_the_workers():
    assert combined_exit_code([0, 0], interrupted=False) == 0
    assert combined_exit_code([0, 1, 0], interrupted=False) == 1
    assert combined_exit_code([0, -9], interrupted=False) == 137
    assert combined_exit_code([0, 0], interrupted=True) == 130


def test_workers_get_the_command_line_without_fanout():
    argv = ["agent", "s1", "--gpus", "0,1", "--count=2", "--workers=3", "--timeout", "5"]
    assert without_fanout_options(argv) == ["agent", "s1", "--count=2", "--timeout", "5"]


def test_a_database_url_reaches_the_workers_in_their_environment():
    from pathlib import Path

    from nbsweep.sweeping.workers import Worker, agents_on_store

    workers = [Worker("worker0", {"CUDA_VISIBLE_DEVICES": ""})]
    url = "postgresql://me:secret@db.example/sweeps"
    fleet, argv = agents_on_store(workers, ["agent", "local:x"], url)
    assert argv == ["agent", "local:x"] and fleet[0].env["NBSWEEP_STORE"] == url
    fleet, argv = agents_on_store(workers, ["agent", "local:x"], Path("s.db"))
    assert argv == ["agent", "local:x", "--store", "s.db"] and "NBSWEEP_STORE" not in fleet[0].env
