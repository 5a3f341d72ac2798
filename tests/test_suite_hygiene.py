"""The suite minds its own processes and its own house.

Its leftover checks find and kill only what the test itself started (processes carrying the
test's own ``MARKER_ENV`` value), never a user's kernels or sweeps running beside it, however
much their command lines look like ours. And its modules keep to the layout: helpers in
helpers.py, fixtures in conftest.py, waits that poll."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    MARKER_ENV,
    CliRun,
    kill_marked,
    no_kernel_left,
    wait_until,
    wait_until_gone,
)

TESTS = Path(__file__).parent
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def kernel_like(env_extra: dict, *argv: str) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != MARKER_ENV}
    return subprocess.Popen([*SLEEP, *argv], env={**env, "NBSWEEP_KERNEL_MARK": "x", **env_extra})


def test_a_users_kernel_started_during_a_test_is_left_alone():
    with no_kernel_left(timeout=0.5):
        users = kernel_like({})  # a kernel of the user's own sweep, started meanwhile
    try:
        assert users.poll() is None, "the leftover check killed a kernel it did not start"
    finally:
        users.kill()
        users.wait()


def test_a_kernel_the_test_left_is_found_and_killed():
    started = []
    with (
        pytest.raises(AssertionError, match="kernels survived"),
        no_kernel_left(timeout=0.5) as marker,
    ):
        started.append(kernel_like({MARKER_ENV: marker}))
    assert started[0].wait(timeout=5) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ("-m", "ipykernel_launcher", "-f", "kernel-1234.json"),
        ("nbsweep", "agent", "local:abcd1234", "--no-wandb"),
        ("nbsweep-forker",),
    ],
    ids=["ipykernel", "nbsweep-agent", "fork-template"],
)
def test_every_leftover_check_leaves_a_process_started_outside_the_suite(tmp_path, argv):
    """A process whose command line reads like a kernel, an agent or the fork template, but
    which no test started (no marker, or another session's), outlives each check."""
    strangers = [kernel_like({}, *argv), kernel_like({MARKER_ENV: "someone-else"}, *argv)]
    try:
        with no_kernel_left(timeout=0.2):
            pass
        runner = CliRun(tmp_path)
        runner.finish(timeout=0.2)
        assert kill_marked(runner.marker, timeout=0.2) == []
        assert wait_until_gone(runner.marker, timeout=0) == []
        for stranger in strangers:
            assert stranger.poll() is None, f"a leftover check killed {stranger.args}"
    finally:
        for stranger in strangers:
            stranger.kill()
            stranger.wait()


def test_wait_until_returns_the_first_true_value_and_says_what_it_waited_for():
    answers = iter([None, 0, "ready"])
    assert wait_until(lambda: next(answers), timeout=5, interval=0) == "ready"
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for the flag"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, what="the flag")


def test_wait_until_stops_as_soon_as_a_process_it_needs_has_exited():
    gone = subprocess.Popen([sys.executable, "-c", "print('bye')"], stdout=subprocess.PIPE)
    gone.wait()
    with pytest.raises(AssertionError, match="exited before the flag"):
        wait_until(lambda: False, timeout=60, what="the flag", alive=[gone])


# --- the suite's layout --------------------------------------------------------------------

HELPERS = "helpers.py"  # the one module where the waiting loops live
LONGEST_UNEXPLAINED_SLEEP = 0.5
SCENARIO = "# scenario:"


def modules() -> Iterator[tuple[Path, ast.Module, list[str]]]:
    for path in sorted(TESTS.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        yield path, ast.parse(source), source.splitlines()


def imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_no_module_imports_a_test_module_or_conftest():
    """Shared helpers live in helpers.py and shared fixtures in conftest.py: a test module
    imports neither another test module nor conftest (pytest loads conftest itself)."""
    found = [
        f"{path.name}:{line}: import {name}"
        for path, tree, _ in modules()
        for line, name in imported(tree)
        if name.split(".")[0] == "conftest" or name.split(".")[0].startswith("test_")
    ]
    assert not found, found


def _sleeps(tree: ast.Module) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "sleep":
                yield node


def _explained(call: ast.Call, lines: list[str]) -> bool:
    """A ``# scenario:`` comment on the call's line, or in the comment lines right above."""
    if SCENARIO in lines[call.lineno - 1]:
        return True
    index = call.lineno - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        if SCENARIO in lines[index]:
            return True
        index -= 1
    return False


def test_fixed_sleeps_are_scenarios_and_waits_poll():
    """Rule: outside helpers.py, a test's ``time.sleep``/``asyncio.sleep`` call (not one in a
    notebook's source, which is a string) sleeps at most 0.5 s unless a ``# scenario:``
    comment on its line or right above says why the time itself is the test (a heartbeat
    that must lapse, signals a person sends apart). A wait for a condition polls with
    ``helpers.wait_until`` / ``wait_for_file`` instead, so a test waits only as long as
    needed."""
    unexplained = []
    for path, tree, lines in modules():
        if path.name == HELPERS:
            continue
        for call in _sleeps(tree):
            [seconds] = call.args[:1] or [ast.Constant(0)]
            short = (
                isinstance(seconds, ast.Constant)
                and isinstance(seconds.value, (int, float))
                and seconds.value <= LONGEST_UNEXPLAINED_SLEEP
            )
            if not short and not _explained(call, lines):
                unexplained.append(f"{path.name}:{call.lineno}: {lines[call.lineno - 1].strip()}")
    assert not unexplained, unexplained
