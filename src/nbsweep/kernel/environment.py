"""The environment a trial's kernel runs in, built in one place for every way a kernel
starts: warm (the agent's recipe), early (``nbsweep run``) or by the trial itself."""

from __future__ import annotations

import os
from collections.abc import Mapping

from nbsweep.kernel.api import TRIAL_ENV


def trial_variables(added: Mapping[str, str] | None = None) -> dict[str, str]:
    """``added`` and the mark that makes ``nbsweep.log`` in the kernel report to the trial:
    what a kernel started before its trial is given on top of what it has."""
    return {**(added or {}), TRIAL_ENV: "1"}


def trial_environment(added: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``trial_variables(added)`` over it."""
    return {**os.environ, **trial_variables(added)}
