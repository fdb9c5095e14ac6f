"""The ``filejobs`` command."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from service.settings import get_settings

app = typer.Typer(
    name="filejobs",
    help="Upload a file, get 202 Accepted, process it in the background.",
    no_args_is_help=True,
    add_completion=False,
)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the API (and, on the local backend, the worker pool and the sweeper)."""
    import uvicorn

    _logging(log_level)
    settings = get_settings()
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


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the latest version."""
    from service.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    typer.echo("database is up to date")


if __name__ == "__main__":
    app()
