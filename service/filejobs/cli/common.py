"""What every client command shares: the connection options, error handling, consoles and exit codes."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from filejobs.client import FilejobsError, ProblemError, Retrying, TransportError, WaitTimeout

DEFAULT_URL = "http://127.0.0.1:8000"

#: Exit codes: 1 a job (or the server) failed, 2 a usage error, 124 ``wait --timeout`` ran out
#: (as timeout(1)), 130 interrupted by Ctrl-C (128 + SIGINT).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="FILEJOBS_URL",
        show_envvar=True,
        help=f"The filejobs server's base URL (default {DEFAULT_URL}).",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="FILEJOBS_API_KEY", show_envvar=True, help="API key sent with every request."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def server_url(server: str | None) -> str:
    """The base URL; one that ends in the API's ``/v1`` is refused with what to give instead."""
    url = (server or DEFAULT_URL).rstrip("/")
    if url.endswith("/v1"):
        fail(
            f"The server URL {escape(url)} ends in /v1: give the base URL, {escape(url.removesuffix('/v1'))} "
            "(--server / FILEJOBS_URL).",
            EXIT_USAGE,
        )
    return url


class RetryNotice:
    """The client's ``on_retry``: says on stderr, at the first retry, that the server does not
    answer yet and that the command is trying again, instead of seconds of silence."""

    def __init__(self, server: str, console: Console | None = None) -> None:
        self.server = server
        self.console = console or stderr()
        self.said = False

    def __call__(self, retrying: Retrying) -> None:
        if self.said:
            return
        self.said = True
        self.console.print(
            f"[yellow]No answer from {escape(self.server)} yet[/yellow] ({escape(retrying.reason)}); "
            f"retrying, up to {retrying.retries} times…",
            soft_wrap=True,
        )


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich exits 1 itself; the ``filejobs`` group ends every closed pipe alike (exit 141)."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "stdout closed")


def stdout() -> Console:
    # Made per call, so output goes to whatever sys.stdout is now (typer's CliRunner swaps it).
    return _Console(file=sys.stdout, highlight=False, soft_wrap=False)


def stderr() -> Console:
    return _Console(file=sys.stderr, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document (or line) on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def describe_problem(exc: ProblemError) -> str:
    """``404 Not Found: No job with id …`` plus the per-field errors of a 422, if any."""
    title = exc.title or "Error"
    text = f"{exc.status} {title}" + (f": {exc.detail}" if exc.detail else "")
    errors = exc.body.get("errors") if isinstance(exc.body, dict) else None
    if isinstance(errors, list):
        for error in errors[:20]:
            if isinstance(error, dict):
                where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
                text += f"\n  {where or 'params'}: {error.get('msg', error)}"
            else:
                text += f"\n  {error}"
    return text


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``message`` (rich markup) in red on stderr and exit with ``code``."""
    stderr().print(f"[red]{message}[/red]", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def handle_errors(server: str | None, *, interrupt: bool = True) -> Iterator[None]:
    """Turn the client's exceptions into a red message and an exit code; never a traceback.
    Ctrl-C exits 130 too, unless ``interrupt`` is false (the caller handles it)."""
    try:
        yield
    except ProblemError as exc:
        fail(escape(describe_problem(exc)))
    except WaitTimeout as exc:
        fail(escape(str(exc) or "Timed out waiting for the job."), EXIT_TIMEOUT)
    except TransportError as exc:
        fail(
            f"Cannot reach the filejobs server at {escape(server_url(server))}: {escape(str(exc))}\n"
            "Is it running (filejobs serve), and are --server / FILEJOBS_URL right?"
        )
    except FilejobsError as exc:
        fail(escape(str(exc)))
    except KeyboardInterrupt:
        if not interrupt:
            raise
        stderr().print("[yellow]Interrupted.[/yellow]")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def human_bytes(size: int | float | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
