"""One exception family for nbsweep; the CLI turns each into one line and an exit code."""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class NbsweepError(Exception):
    """Base of every error nbsweep reports to a user. ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_FAILED


class UsageError(NbsweepError):
    """The user asked for something that cannot work: bad arguments, notebook, kernel or path."""

    exit_code = EXIT_USAGE


class NotebookError(UsageError):
    """The notebook cannot be read, is not valid, or has no parameters where some are needed."""


class ParameterError(UsageError):
    """A parameter name or value cannot be injected."""


class KernelStartError(UsageError):
    """The kernel could not be found or started."""


class OutputError(NbsweepError):
    """A result could not be written (disk full, quota, read-only, I/O error). Nothing
    half-written replaced a good file: writes are atomic."""

    exit_code = EXIT_FAILED


class TrialFailed(NbsweepError):
    """A trial ran but did not succeed: a cell raised, the kernel died, or a timeout fired."""

    exit_code = EXIT_FAILED


class TrialStopped(NbsweepError):
    """A trial was stopped from outside (Ctrl-C, SIGTERM, a sweep's stop)."""

    def __init__(self, message: str, exit_code: int = EXIT_INTERRUPTED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
