"""The check the service's commands (``serve``,
``worker``, ``migrate``, ``keys``) make first: on a client-only install (``pip install
filejobs``) they end with one line naming the extra, never an ImportError traceback."""

from __future__ import annotations

import importlib.util

import typer

from filejobs.cli.common import EXIT_USAGE
from filejobs.server_modules import SERVER_MODULES


def missing_server_modules() -> list[str]:
    """The server's modules that cannot be imported here (found without importing them)."""
    missing = []
    for name in SERVER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # an import hook that refuses it
            found = False
        if not found:
            missing.append(name)
    return missing


def require_server(command: str) -> None:
    """End ``filejobs COMMAND`` with one line if the server's dependencies are not installed."""
    missing = missing_server_modules()
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        typer.echo(
            f"filejobs {command}: the server is not installed here (no module {missing[0]}{more}): "
            "install filejobs[server] (pip install 'filejobs[server]')",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
