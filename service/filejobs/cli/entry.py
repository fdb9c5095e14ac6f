"""What every ``filejobs`` command shares at its entry: a closed stdout and bad ``FILEJOBS_*``
values end with a short message and an exit code, never a traceback."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from pydantic import ValidationError
from typer import _click
from typer.core import TyperGroup

from filejobs.cli.common import EXIT_USAGE, stderr
from filejobs.settings import Settings

#: ``cmd | head -1``: the exit status of a program killed by SIGPIPE (128 + 13), as shells expect.
EXIT_BROKEN_PIPE = 141


class Commands(TyperGroup):
    """The ``filejobs`` group: runs the command, then handles what no command should print a
    traceback for."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BrokenPipeError, BaseExceptionGroup) as exc:
            if not closed_stdout(exc):
                raise
            silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except ValidationError as exc:
            if exc.title != Settings.__name__:
                raise
            for line in settings_errors(exc):
                stderr().print(line, markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None


def closed_stdout(exc: BaseException) -> bool:
    """A BrokenPipeError, alone or among the errors of a task group (the batch's writers)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(BrokenPipeError) is not None
    return isinstance(exc, BrokenPipeError)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return  # not a real file (a test's buffer)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def settings_errors(exc: ValidationError) -> list[str]:
    """One line per bad environment value, named as it is set: ``FILEJOBS_WORKERS: Input should be
    a valid integer…`` (the value itself is not repeated: it may be a secret)."""
    prefix = str(Settings.model_config.get("env_prefix") or "")
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        name = str(error["loc"][0]).upper() if error["loc"] else ""
        where = f"{prefix}{name}" if name else "The settings"
        lines.append(f"Invalid {where}: {error['msg']}")
    return lines
