"""``filejobs serve``, ``filejobs worker`` and ``filejobs migrate``: running the service itself."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from filejobs import server_process
from filejobs.cli.server_extra import require_server
from filejobs.server_process import configure_logging
from filejobs.settings import MULTIPROC_ENV, Settings, get_settings


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    allow_no_auth: Annotated[
        bool,
        typer.Option(
            "--allow-no-auth",
            help="Listen on a non-loopback address although no API key is required (a proxy in "
            "front authenticates).",
        ),
    ] = False,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="HTTP processes (uvicorn workers). [default: FILEJOBS_API_PROCESSES, 1]",
        ),
    ] = None,
) -> None:
    """Run the API (and, on the local backend, the worker pool and the sweeper)."""
    require_server("serve")
    configure_logging(log_level)
    settings = get_settings()
    check_storage(settings, "serve")
    processes = processes or settings.api_processes
    if settings.auto_migrate:
        _migrate_in_child(settings)
        hand_over({"FILEJOBS_AUTO_MIGRATE": "false"})  # done: the app (and its processes) skip it
    if (
        not _loopback(host)
        and not (allow_no_auth or settings.allow_open_bind)
        and not _keys_required(settings)
    ):
        typer.echo(
            f"filejobs serve: refusing to listen on {host} with no API key required: anyone who can "
            "reach it could upload and read every job. Make a key (`filejobs keys create NAME`), or set "
            "FILEJOBS_REQUIRE_AUTH=1, or, if something in front of it authenticates, pass "
            "--allow-no-auth (FILEJOBS_ALLOW_OPEN_BIND=1).",
            err=True,
        )
        raise typer.Exit(2)
    # The worker process (WORKER_PROCESS) counts the jobs it runs: its counters join the API's.
    prepare_metrics_directory(settings, private=processes > 1 or settings.runs_worker_process)
    if processes > 1:
        _prepare_processes(settings, processes)
    del settings
    # uvicorn runs in this process, replaced by one that loads the app alone (no CLI: less memory).
    sys.stdout.flush()
    sys.stderr.flush()
    argv = server_process.command(host, port, log_level.lower(), processes)
    os.execv(argv[0], argv)  # noqa: S606 - this interpreter, our module, no shell: arguments are typed options


def _prepare_processes(settings: Settings, processes: int) -> None:
    """Before uvicorn starts ``processes`` HTTP processes (each runs the app's lifespan; the
    database is migrated already, their metrics directory made): share the local job workers out
    among them, and have each stop with this supervisor (``FILEJOBS_SUPERVISED``)."""
    values = {"FILEJOBS_SUPERVISED": str(os.getpid())}  # the processes' parent, to watch for
    if settings.backend == "local":
        values["FILEJOBS_WORKERS"] = str(-(-settings.workers // processes))  # ceiling
    hand_over(values)


def hand_over(values: Mapping[str, str]) -> None:
    """The one place ``filejobs serve``/``worker`` pass settings on, and the only way there is.

    uvicorn builds the app from a name (``filejobs.app:create_app``, whose lifespan reads
    ``Settings()``) in the process serve execs into or, with ``--processes``, in processes that one
    spawns, which take no arguments and inherit this process's environment; prometheus-client (in
    this process and the Celery pool's) takes ``PROMETHEUS_MULTIPROC_DIR`` from it too. So what
    serve decided is written into this process's environment, here only, as the variables Settings
    reads (``FILEJOBS_*``); nothing in filejobs reads it back but Settings."""
    os.environ.update(values)


def prepare_metrics_directory(settings: Settings, *, private: bool) -> Path | None:
    """Make prometheus-client's multiprocess directory at startup, before anything imports
    :mod:`filejobs.metrics` (whose metrics open their files in it as they are made).

    ``PROMETHEUS_MULTIPROC_DIR`` set: made if missing. Unset and ``private`` (several processes
    must add up their counters: ``serve --processes``, ``worker --metrics-port``): a fresh
    temporary directory, handed over. Else None: every process keeps its own metrics in memory."""
    directory = settings.prometheus_multiproc_dir
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    if not private:
        return None
    directory = Path(tempfile.mkdtemp(prefix="filejobs-metrics-"))
    hand_over({MULTIPROC_ENV: str(directory)})
    return directory


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Jobs this worker runs at once. [default: FILEJOBS_WORKERS, the CPU count]"),
    ] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (default), threads or solo.")] = "prefork",
    metrics_port: Annotated[
        int | None, typer.Option(help="Also serve Prometheus /metrics of this worker on this port.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run a Celery worker for the celery backend (FILEJOBS_BACKEND=celery, FILEJOBS_BROKER_URL)."""
    require_server("worker")
    configure_logging(log_level)
    settings = get_settings()
    if settings.backend != "celery" or not settings.broker_url:
        typer.echo(
            "filejobs worker runs Celery workers: set FILEJOBS_BACKEND=celery and FILEJOBS_BROKER_URL "
            "(redis://… or amqp://…). On the local backend, `filejobs serve` runs the workers itself.",
            err=True,
        )
        raise typer.Exit(2)
    check_storage(settings, "worker")
    # Jobs run in the pool's processes: their metrics reach the --metrics-port server (in this
    # process) through prometheus-client's multiprocess files. The directory must be there before
    # prometheus_client is imported, i.e. before the import below.
    directory = prepare_metrics_directory(settings, private=metrics_port is not None)
    settings = settings.model_copy(update={"prometheus_multiproc_dir": directory})
    from filejobs.jobs.celery_worker import run_worker

    if metrics_port is not None:
        from filejobs.metrics import start_metrics_server

        start_metrics_server(metrics_port, directory)
    run_worker(
        settings,
        concurrency=concurrency or max(1, settings.workers),
        pool=pool,
        loglevel=log_level.upper(),
    )


def check_storage(settings: Settings, command: str) -> None:
    """Exit with one line naming the storage (the bucket) and the error when it cannot be used."""
    if not settings.storage_url.strip():
        return  # the data directory: made (and checked) at startup as before
    from filejobs.storage import open_storage

    try:
        open_storage(settings).check()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        typer.echo(
            f"filejobs {command}: the storage cannot be used ({settings.storage_url}): {reason}", err=True
        )
        raise typer.Exit(2) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _keys_required(settings: Settings) -> bool:
    """True when /v1 will demand keys: FILEJOBS_REQUIRE_AUTH, or a key (even revoked) was made."""
    if settings.require_auth:
        return True
    from filejobs import keys
    from filejobs.db import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    try:
        return keys.any_key(db)
    finally:
        db.dispose()


def _migrate_in_child(settings: Settings) -> None:
    """Bring the database to the newest migration in a child process (``filejobs migrate``), so
    the server never imports Alembic (about 9 MB it would keep for good). Nothing to do: no child."""
    from filejobs.db import Database
    from filejobs.schema_version import at_head

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    try:
        if at_head(db):
            return
    finally:
        db.dispose()
    done = subprocess.run([sys.executable, "-m", "filejobs.cli", "migrate"], check=False)
    if done.returncode != 0:
        typer.echo("filejobs serve: migrating the database failed (see above).", err=True)
        raise typer.Exit(1)


def migrate() -> None:
    """Create or upgrade the database schema to the latest version."""
    require_server("migrate")
    from sqlalchemy.exc import OperationalError

    from filejobs.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        upgrade(settings.resolved_database_url)
    except OperationalError as exc:  # unreachable, refused, no such database, bad credentials
        reason = str(exc.orig or exc).strip().splitlines()[0]
        typer.echo(f"filejobs migrate: the database cannot be used: {reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo("database is up to date")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(migrate)
