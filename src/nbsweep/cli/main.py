"""The ``nbsweep`` command: parse, call the library, turn its errors into one line and an
exit code (1 failed trial, 2 usage or input error, 130 interrupted, 143 terminated). One
module per command; each parses its options and calls the library."""

from __future__ import annotations

from typing import Any

import click

from nbsweep.api import __version__, redacted
from nbsweep.cli.agent import agent, without_fanout_options
from nbsweep.cli.dashboard import dashboard
from nbsweep.cli.inspect import inspect
from nbsweep.cli.run import run
from nbsweep.cli.status import status
from nbsweep.cli.sweep import sweep
from nbsweep.errors import NbsweepError

__all__ = ["cli", "main", "without_fanout_options"]


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click's stubs call exit_code a class variable; click reads it from the instance.
        self.exit_code = exit_code  # type: ignore[misc]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NbsweepError as error:
            # Messages quote values, kernel output and URLs: none of them prints a secret.
            raise _Failure(redacted(str(error)), error.exit_code) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nbsweep")
def cli() -> None:
    """Run a Jupyter notebook as a W&B sweep program."""


for command in (run, inspect, agent, sweep, status, dashboard):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="nbsweep")


if __name__ == "__main__":  # pragma: no cover
    main()
