"""``filejobs serve`` and ``filejobs migrate``: running the service itself."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Annotated

import typer

from service.settings import get_settings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the API (and, on the local backend, the worker pool and the sweeper)."""
    import uvicorn

    _logging(log_level)
    settings = get_settings()
    # uvicorn handles SIGTERM itself (graceful shutdown), then restores the previous handler and
    # raises the signal again; with the default handler the process would die by SIGTERM (exit 143)
    # even though it shut down cleanly. This handler makes a completed graceful shutdown exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level.lower(),
        # Long-polls end within this; then running jobs get FILEJOBS_SHUTDOWN_GRACE to finish.
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    del settings


def migrate() -> None:
    """Create or upgrade the database schema to the latest version."""
    from service.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    typer.echo("database is up to date")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(migrate)
