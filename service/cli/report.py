"""What ``filejobs submit`` says at the end: a summary line, the failures, how to resume."""

from __future__ import annotations

import shlex
from collections import Counter
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service.cli.common import human_bytes
from service.cli.display import STYLES
from service.cli.ledger import FileState

#: Failures listed in the table; the rest are counted (all of them are in --json and the ledger).
MAX_ROWS = 50


def ok_statuses(wait: bool) -> frozenset[str]:
    """The statuses that count as success: done when waiting, accepted otherwise."""
    return frozenset({"succeeded"}) if wait else frozenset({"queued", "running", "succeeded"})


def json_record(state: FileState) -> dict[str, Any]:
    """The ``--json`` line of one file."""
    return {
        "path": state.path,
        "relpath": state.relpath,
        "size": state.size,
        "sha256": state.sha256,
        "job_id": state.job_id,
        "status": state.status,
        "error": state.error,
        "result_path": state.result_path,
    }


def summary(
    console: Console, states: list[FileState], *, wait: bool, uploaded: float, elapsed: float
) -> None:
    counts = Counter(s.status for s in states)
    parts = [
        f"[{STYLES.get(status, '')}]{count} {status}[/]"
        for status, count in sorted(counts.items(), key=lambda item: _order(item[0]))
    ]
    noun = "file" if len(states) == 1 else "files"
    console.print(
        f"{len(states)} {noun}: {', '.join(parts)} · {human_bytes(uploaded)} uploaded in {elapsed:.1f} s"
    )
    failures = [s for s in states if s.status not in ok_statuses(wait)]
    if failures:
        console.print(failure_table(failures))
        if len(failures) > MAX_ROWS:
            console.print(f"… and {len(failures) - MAX_ROWS} more (all of them are in --json and the ledger)")


def _order(status: str) -> int:
    keys = list(STYLES)
    return keys.index(status) if status in keys else len(keys)


def failure_table(failures: list[FileState]) -> Table:
    table = Table(title="Not succeeded", title_style="bold red", show_lines=False)
    table.add_column("File", overflow="fold")
    table.add_column("Job", overflow="fold", no_wrap=True)
    table.add_column("Status")
    table.add_column("Error")
    table.add_column("Message", overflow="fold")
    for state in failures[:MAX_ROWS]:
        error = state.error or {}
        table.add_row(
            escape(state.relpath),
            state.job_id or "",
            f"[{STYLES.get(state.status, '')}]{state.status}[/]",
            escape(str(error.get("code") or "")),
            escape(str(error.get("message") or "")),
        )
    return table


def resume_command(ctx: typer.Context) -> str:
    """The command line that was run (options as typed; ``--api-key`` left out, it is a secret)."""
    options: list[str] = []
    arguments: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        value = ctx.params.get(name)
        if not from_command_line(ctx, name) or name == "api_key":
            continue
        if param.param_type_name == "argument":
            arguments += [str(v) for v in value or ()]
        elif getattr(param, "is_flag", False):
            options.append(param.opts[0] if value else (param.secondary_opts or param.opts)[0])
        elif param.multiple:
            for item in value or ():
                options += [param.opts[0], str(item)]
        else:
            options += [param.opts[0], str(value)]
    separator = ["--"] if any(a.startswith("-") for a in arguments) else []
    return shlex.join(["filejobs", ctx.info_name or "submit", *options, *separator, *arguments])


def from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
