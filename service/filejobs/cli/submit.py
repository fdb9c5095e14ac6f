"""``filejobs submit PATH...``: a batch of files, N uploads at a time, resumable with a ledger."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from filejobs import client_json
from filejobs.cli import report
from filejobs.cli.batch import Batch
from filejobs.cli.batch_options import Fatal, Interrupted, Options
from filejobs.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ApiKeyOption,
    JsonOption,
    RetryNotice,
    ServerOption,
    fail,
    handle_errors,
    print_json,
    server_url,
    stderr,
    stdout,
)
from filejobs.cli.display import Display
from filejobs.cli.files import SourceError, collect
from filejobs.cli.ledger import FileState, Ledger, LedgerBusy, load
from filejobs.client import AsyncClient
from filejobs.memory import parse_size

HINT = "'--params'"


def parse_params(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        params = client_json.loads(value)  # the server's own rules: deep nesting, huge integers
    except client_json.ClientJSONError as exc:
        raise typer.BadParameter(str(exc), param_hint=HINT) from None
    if not isinstance(params, dict):
        raise typer.BadParameter("must be a JSON object, such as '{\"size\": 512}'", param_hint=HINT)
    return params


@dataclass
class Run:
    """What one ``submit`` run is doing, kept where the end of the run (or Ctrl-C) can see it."""

    states: list[FileState]
    options: Options
    json: bool
    retries: int = 5
    uploaded: float = 0.0
    #: Bytes not sent: the server already held those files (made the jobs by hash).
    skipped: int = 0
    fatal: Fatal | None = None
    started: float = field(default_factory=time.monotonic)


async def _run(run: Run, server: str | None, api_key: str | None, ledger_path: Path | None) -> None:
    url = server_url(server)
    console = stderr()
    notice = RetryNotice(url, console)
    async with AsyncClient(
        url,
        api_key=api_key,
        retries=run.retries,
        on_retry=notice,
        resumable_threshold=run.options.resumable_threshold,
        chunk_size=run.options.chunk_size,
    ) as client:
        names = [p.name for p in await client.processors()]  # reachable? the processor known?
        if run.options.processor is not None and run.options.processor not in names:
            fail(
                f"Unknown processor {escape(repr(run.options.processor))}; this server has: "
                f"{escape(', '.join(names))}.",
                EXIT_USAGE,
            )
        previous = load(ledger_path) if ledger_path else {}
        context = {"processor": run.options.processor, "params": run.options.params}
        ledger = Ledger(ledger_path, context).open() if ledger_path else None
        display = Display(
            console,
            files=len(run.states),
            total=sum(state.size for state in run.states),
            enabled=console.is_terminal and not run.json,
        )
        emit = (lambda state: print_json(report.json_record(state))) if run.json else None
        batch = Batch(
            client, run.states, run.options, previous=previous, ledger=ledger, display=display, emit=emit
        )
        try:
            with display, _on_ctrl_c(batch, console):
                try:
                    await batch.run()
                except* Fatal as group:
                    run.fatal = next(e for e in group.exceptions if isinstance(e, Fatal))
        finally:
            run.uploaded = display.uploaded_bytes
            run.skipped = display.skipped_bytes
            if ledger is not None:
                ledger.close()


@contextmanager
def _on_ctrl_c(batch: Batch, console: Console) -> Iterator[None]:
    """The first Ctrl-C stops the batch gently (:meth:`Batch.interrupt`), the second at once.
    Nothing is installed when SIGINT is ignored (a background job) or off the main thread."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    if (
        signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def on_sigint() -> None:
        if batch.interrupt():
            console.print(
                "\n[yellow]Stopping[/yellow]: uploads on their way get their answer; Ctrl-C again stops now."
            )
        elif main is not None:
            main.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


class Resumable(StrEnum):
    """--resumable: when to upload with tus."""

    auto = "auto"
    always = "always"
    never = "never"


def submit(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files and folders (walked recursively) to submit.", show_default=False),
    ],
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    processor: Annotated[
        str | None, typer.Option(help="The processor to run on every file (the server's default: inspect).")
    ] = None,
    params: Annotated[
        str | None, typer.Option(help="The processor's params, a JSON object: '{\"size\": 512}'.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for every job to finish.")] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=64, help="Uploads at a time.")
    ] = 4,
    ledger: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="JSON-lines ledger that makes the batch resumable: run the same "
            "command again to submit only what has no job yet and wait for the rest.",
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Download every result under this folder, by relative path (implies --wait).",
        ),
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Only files whose relative path or name matches this glob.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip files (and folders) whose relative path or name matches.")
    ] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also submit hidden files and folders.")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="On a re-run, retry the ledger's failed and cancelled jobs."),
    ] = False,
    retries: Annotated[
        int, typer.Option(min=0, max=100, help="Retries of each request on connection errors, 429 and 503.")
    ] = 5,
    resumable: Annotated[
        Resumable,
        typer.Option(
            help="Upload with tus (resumable: a re-run, or a retry after a dropped connection, goes on "
            "from the server's offset): auto = files of at least --resumable-threshold.",
        ),
    ] = Resumable.auto,
    resumable_threshold: Annotated[
        str, typer.Option(help="Size from which --resumable auto uses tus: bytes, or 64MiB, 1GiB.")
    ] = "64MiB",
    chunk_size: Annotated[
        str, typer.Option(help="Bytes per resumable PATCH (what a failure may send again): 16MiB, 64MiB.")
    ] = "64MiB",
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse/--no-reuse",
            help="Let the server reuse the kept result of the same file, processor and params "
            "(--no-reuse: run every job afresh). Files the server already holds are never sent again.",
        ),
    ] = True,
    callback_url: Annotated[
        str | None,
        typer.Option(
            help="Send each job's final status to this https URL, signed with the key's default "
            "secret (make it once: filejobs webhooks rotate --default).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Submit files and folders as jobs, N at a time, with progress; optionally wait and fetch results.

    Exit status: 0 when every job succeeded (without --wait: every file was accepted), 1 otherwise,
    2 for a usage error (bad --params, no such path), 130 when interrupted.
    """
    parsed = parse_params(params)
    results = results.absolute() if results else None
    ledger = ledger.absolute() if ledger else None
    options = Options(
        processor,
        parsed,
        wait or results is not None,
        concurrency,
        results,
        retry_failed,
        resumable=resumable.value,
        resumable_threshold=_size("--resumable-threshold", resumable_threshold),
        chunk_size=_size("--chunk-size", chunk_size, least=1),
        reuse=reuse,
        callback_url=callback_url,
    )
    run = Run([], options, json_output, retries)
    try:
        try:
            sources = collect(
                paths,
                include=include,
                exclude=exclude,
                hidden=hidden,
                skip=[p for p in (ledger, results) if p],
            )
        except SourceError as exc:
            fail(escape(str(exc)), EXIT_USAGE)
        if not sources:
            stderr().print("[yellow]No files to submit[/yellow] (check the paths and --include/--exclude).")
            return
        run.states = [FileState(str(s.path), s.relpath, s.size, s.mtime_ns) for s in sources]
        with handle_errors(server, interrupt=False):
            try:
                asyncio.run(_run(run, server, api_key, ledger))
            except LedgerBusy as exc:
                fail(escape(str(exc)))
    except (KeyboardInterrupt, asyncio.CancelledError, Interrupted):
        _interrupted(run, ctx, ledger)
    _finish(run, ctx, ledger)


def _size(option: str, value: str, *, least: int = 0) -> int:
    size = parse_size(value)
    if size is None or size < least:
        fail(
            f"{option} must be a size such as 1048576, 64MiB or 1GiB, not {escape(repr(value))}.",
            EXIT_USAGE,
        )
    return size


def _finish(run: Run, ctx: typer.Context, ledger: Path | None) -> None:
    if run.fatal is not None:
        fail(f"The server refused the batch: {escape(str(run.fatal))}", run.fatal.exit_code)
    wait = run.options.wait
    if not run.json:
        report.summary(
            stdout(), run.states, wait=wait, uploaded=run.uploaded, elapsed=_elapsed(run), skipped=run.skipped
        )
    ok = report.ok_statuses(wait)
    if any(s.status not in ok for s in run.states):
        if ledger is not None and any(s.status in ("error", "pending", "uploading") for s in run.states):
            stderr().print("Re-run to resume:", report.resume_command(ctx), soft_wrap=True, markup=False)
        elif ledger is not None and any(s.status in ("failed", "cancelled") for s in run.states):
            stderr().print("A re-run with --retry-failed retries the failed and cancelled jobs.")
        raise typer.Exit(EXIT_FAILED)


def _elapsed(run: Run) -> float:
    return time.monotonic() - run.started


def _interrupted(run: Run, ctx: typer.Context, ledger: Path | None) -> None:
    err = stderr()
    done = sum(1 for s in run.states if s.status in ("succeeded", "failed", "cancelled", "rejected"))
    err.print(
        f"\n[yellow]Interrupted[/yellow] after {_elapsed(run):.1f} s: {done} of {len(run.states)} files "
        "finished. Jobs already submitted go on running on the server."
    )
    if ledger is not None:
        err.print(f"The ledger {escape(str(ledger))} is up to date. Resume with:")
        err.print("  " + report.resume_command(ctx), soft_wrap=True, markup=False, highlight=False)
        if report.from_command_line(ctx, "api_key"):
            err.print("(add --api-key, or set FILEJOBS_API_KEY: the key is not shown)")
    else:
        err.print("Without --ledger this batch cannot be resumed: running it again submits every file again.")
    raise typer.Exit(EXIT_INTERRUPTED)


def register(app: typer.Typer) -> None:
    app.command()(submit)
