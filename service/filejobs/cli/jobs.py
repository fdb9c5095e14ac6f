"""One-job commands: ``status``, ``wait``, ``list``, ``result``, ``cancel``, ``retry``, ``delete``,
``processors``. Each takes ``--server`` / ``--api-key`` (or ``FILEJOBS_URL`` / ``FILEJOBS_API_KEY``)
and ``--json``; a server error prints its problem details in red and exits 1."""

from __future__ import annotations

import sys
from itertools import islice
from typing import Annotated

import typer
from rich.markup import escape

from filejobs.cli import render
from filejobs.cli.common import (
    EXIT_FAILED,
    ApiKeyOption,
    JsonOption,
    RetryNotice,
    ServerOption,
    handle_errors,
    print_json,
    server_url,
    stderr,
    stdout,
)
from filejobs.client import Client, Job
from filejobs.client._files import resolve_target, write_json

JobId = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]


#: Fewer retries than the client's default: a person is waiting for the answer (about 3.5 s at most).
RETRIES = 3


def _client(server: str | None, api_key: str | None) -> Client:
    url = server_url(server)
    return Client(url, api_key=api_key, retries=RETRIES, on_retry=RetryNotice(url))


def _show(job: Job, as_json: bool) -> None:
    if as_json:
        print_json(job.model_dump(mode="json"))
    else:
        stdout().print(render.job_table(job))


def status(
    job_id: JobId, server: ServerOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Show a job: status, progress, file, error and result."""
    with handle_errors(server), _client(server, api_key) as client:
        _show(client.get(job_id), as_json)


def wait(
    job_id: JobId,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up after this many seconds (exit 124).")
    ] = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Wait (long-polling) until a job finishes; exit 0 if it succeeded, 1 if it failed or was cancelled."""
    err = stderr()
    with handle_errors(server), _client(server, api_key) as client:
        spinner = (
            err.status(f"waiting for {job_id}", spinner="dots") if not as_json and err.is_terminal else None
        )
        if spinner is not None:
            spinner.start()

        def update(job: Job) -> None:
            if spinner is not None:
                message = f" {job.message}" if job.message else ""
                spinner.update(f"{job.id}: {job.status} {job.progress:.0%}{escape(message)}")

        try:
            job = client.wait(job_id, timeout=timeout, on_update=update)
        finally:
            if spinner is not None:
                spinner.stop()
        _show(job, as_json)
    if job.status != "succeeded":
        raise typer.Exit(EXIT_FAILED)


def list_jobs(
    status: Annotated[str | None, typer.Option(help="Only jobs with this status.")] = None,
    processor: Annotated[str | None, typer.Option(help="Only jobs of this processor.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs (newest first).")] = 50,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first (--json: one JSON array)."""
    with handle_errors(server), _client(server, api_key) as client:
        jobs = list(islice(client.list(status=status, processor=processor, page_size=min(limit, 500)), limit))
    if as_json:
        print_json([job.model_dump(mode="json") for job in jobs])
    elif jobs:
        stdout().print(render.jobs_table(jobs))
    else:
        stderr().print("No jobs.")


def result(
    job_id: JobId,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write the result: a file, a folder (DIR/ is made if missing; the server's file "
            "name inside it, or JOB_ID.json for a JSON result), or - for stdout. Default: a JSON result is "
            "printed, a file result saved in the current folder.",
        ),
    ] = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download a succeeded job's result (exit 1 with the reason while it is not succeeded)."""
    with handle_errors(server), _client(server, api_key) as client:
        if output == "-":
            got = client.result(job_id, to=sys.stdout.buffer)
            if isinstance(got, dict):  # a JSON result: the file object was not used
                print_json(got)
            return
        got = client.result(job_id, to=output)  # a str: "out/" is a folder even before it exists
    if isinstance(got, dict):
        if output is None:
            if as_json:
                print_json(got)
            else:
                stdout().print_json(data=got)
            return
        got = write_json(resolve_target(output, None, job_id, suffix=".json"), got)
    if as_json:
        print_json({"job_id": job_id, "path": str(got)})
    else:
        stderr().print(f"saved {escape(str(got))}")


def cancel(
    job_id: JobId, server: ServerOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Cancel a queued or running job (409 when it has already finished)."""
    with handle_errors(server), _client(server, api_key) as client:
        _show(client.cancel(job_id), as_json)


def retry(
    job_id: JobId, server: ServerOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Queue a failed or cancelled job again, with a fresh attempt budget."""
    with handle_errors(server), _client(server, api_key) as client:
        _show(client.retry(job_id), as_json)


def delete(
    job_id: JobId, server: ServerOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Delete a job and its files (a running job is stopped first)."""
    with handle_errors(server), _client(server, api_key) as client:
        client.delete(job_id)
    if as_json:
        print_json({"id": job_id, "deleted": True})
    else:
        stdout().print(f"deleted {job_id}")


def processors(
    server: ServerOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """List the server's processors: what they accept and their params."""
    with handle_errors(server), _client(server, api_key) as client:
        found = client.processors()
    if as_json:
        print_json([info.model_dump(mode="json") for info in found])
    else:
        stdout().print(render.processors_table(found))


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(wait)
    app.command("list")(list_jobs)
    for command in (result, cancel, retry, delete, processors):
        app.command()(command)
