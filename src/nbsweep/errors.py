"""One exception family for nbsweep; the CLI turns each into one line and an exit code.

Each class states its exit code once: 2 (``EXIT_USAGE``) where the user asked for something
that cannot work (arguments, notebook, kernel, store location), 1 (``EXIT_FAILED``) where it
could work but failed (a trial, a server, a store that broke while in use)."""

from __future__ import annotations

from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class NbsweepError(Exception):
    """Base of every error nbsweep reports to a user. ``exit_code`` is what the CLI returns."""

    exit_code: int = EXIT_FAILED


class UsageError(NbsweepError):
    """The user asked for something that cannot work: bad arguments, notebook, kernel or path."""

    exit_code = EXIT_USAGE


class NotebookError(UsageError):
    """The notebook cannot be read, is not valid, or has no parameters where some are needed."""


class ParameterError(UsageError):
    """A parameter name or value cannot be injected."""


class KernelStartError(UsageError):
    """The kernel could not be found or started."""


class StoreError(UsageError):
    """The path or URL is no store nbsweep can use: not one, damaged, too new, on a network
    file system, a server that refuses the connection."""


class RuntimeFailure(NbsweepError):
    """Something that could have worked failed: exit code 1."""

    exit_code = EXIT_FAILED


class StoreFault(RuntimeFailure):
    """A store that opened fine broke while in use: its file deleted, replaced or damaged,
    its database refusing statements. Not the user's choice of path: a failure."""


class StoreDisconnected(RuntimeFailure):
    """The connection to the database server was lost (the store reconnects)."""


class StoreUnreachable(RuntimeFailure):
    """The database server stayed unreachable for longer than the reconnect timeout."""


class StoreLocked(RuntimeFailure):
    """Another process held the store's write lock for longer than the busy timeout."""


class WandbServerError(RuntimeFailure):
    """The W&B server refused a request (a 4xx, or a GraphQL error) or stayed unreachable."""


class SweepNotFound(WandbServerError):
    """The sweep does not exist (any more)."""


class AgentFailed(RuntimeFailure):
    """Too many trials in a row failed: the agent gave up."""


class OutputError(NbsweepError):
    """A result could not be written (disk full, quota, read-only, I/O error). Nothing
    half-written replaced a good file: writes are atomic."""

    exit_code = EXIT_FAILED


class TrialFailed(NbsweepError):
    """A trial ran but did not succeed: a cell raised, the kernel died, or a timeout fired.
    ``result``: the trial's ``TrialResult`` (its ``output`` is the saved notebook)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class TrialStopped(NbsweepError):
    """A trial was stopped from outside (Ctrl-C, SIGTERM, a sweep's stop); ``result`` as
    for ``TrialFailed``, with the partial notebook."""

    def __init__(self, message: str, exit_code: int = EXIT_INTERRUPTED, *, result: Any = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result


class SweepConfigError(UsageError):
    """A sweep config W&B would refuse; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"sweep config has {count} problem{'' if count == 1 else 's'}:"]
        super().__init__("\n".join(lines + [f"  - {problem}" for problem in self.problems]))
