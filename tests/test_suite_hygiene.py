"""The suite minds its own processes: its leftover check finds and kills only what the test
itself started, never a user's kernels or sweeps running beside it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import MARKER_ENV, no_kernel_left

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def kernel_like(env_extra: dict) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != MARKER_ENV}
    return subprocess.Popen(SLEEP, env={**env, "NBSWEEP_KERNEL_MARK": "x", **env_extra})


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
