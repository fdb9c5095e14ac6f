"""What ``filejobs submit`` says at the end: a summary line, the failures, how to resume."""

from __future__ import annotations

import shlex
from collections import Counter
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from filejobs.cli.common import human_bytes
from filejobs.cli.display import STYLES
from filejobs.cli.ledger import FileState

#: Rows of a table (jobs submitted, kinds of failure); the rest are counted.
MAX_ROWS = 50
#: Files named in a row of failures that several files share.
SHOWN_NAMES = 3
EVERY_ONE = "every file's job and error are in --json and the ledger; `filejobs list` shows the jobs"


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
    console: Console,
    states: list[FileState],
    *,
    wait: bool,
    uploaded: float,
    elapsed: float,
    skipped: int = 0,
) -> None:
    counts = Counter(s.status for s in states)
    parts = [
        f"[{STYLES.get(status, '')}]{count} {status}[/]"
        for status, count in sorted(counts.items(), key=lambda item: _order(item[0]))
    ]
    noun = "file" if len(states) == 1 else "files"
    console.print(
        f"{len(states)} {noun}: {', '.join(parts)} · {human_bytes(uploaded)} uploaded in {elapsed:.1f} s"
        + (f" · {human_bytes(skipped)} not sent (already on the server)" if skipped else "")
    )
    if not wait:
        accepted = [s for s in states if s.job_id is not None and s.status in ok_statuses(wait)]
        if accepted:
            console.print(jobs_table(accepted[:MAX_ROWS]))
            if len(accepted) > MAX_ROWS:
                console.print(f"… and {len(accepted) - MAX_ROWS} more: {EVERY_ONE}")
    failures = [s for s in states if s.status not in ok_statuses(wait)]
    if failures:
        groups = group_failures(failures)
        console.print(failure_table(groups[:MAX_ROWS]))
        if len(groups) > MAX_ROWS:
            console.print(f"… and {len(groups) - MAX_ROWS} more kinds of failure: {EVERY_ONE}")


def _order(status: str) -> int:
    keys = list(STYLES)
    return keys.index(status) if status in keys else len(keys)


def jobs_table(states: list[FileState]) -> Table:
    """Without ``--wait``: the job of every file (to follow with ``filejobs wait JOB``)."""
    table = Table(title="Submitted", title_style="bold", show_lines=False)
    table.add_column("File", overflow="fold")
    table.add_column("Job", overflow="fold", no_wrap=True)
    table.add_column("Status")
    for state in states:
        table.add_row(
            escape(state.relpath), state.job_id or "", f"[{STYLES.get(state.status, '')}]{state.status}[/]"
        )
    return table


def group_failures(failures: list[FileState]) -> list[list[FileState]]:
    """Failures with the same status, error code and message together, in the order first seen."""
    groups: dict[tuple[str, str, str], list[FileState]] = {}
    for state in failures:
        error = state.error or {}
        key = (state.status, str(error.get("code") or ""), str(error.get("message") or ""))
        groups.setdefault(key, []).append(state)
    return list(groups.values())


def failure_table(groups: list[list[FileState]]) -> Table:
    """One row per kind of failure: its file and job, or for several files the first few and a count."""
    table = Table(title="Not succeeded", title_style="bold red", show_lines=False)
    table.add_column("Files", justify="right")
    table.add_column("File", overflow="fold")
    table.add_column("Job", overflow="fold", no_wrap=True)
    table.add_column("Status")
    table.add_column("Error")
    table.add_column("Message", overflow="fold")
    for group in groups:
        first = group[0]
        error = first.error or {}
        names = ", ".join(state.relpath for state in group[:SHOWN_NAMES])
        if len(group) > SHOWN_NAMES:
            names += f", … ({len(group) - SHOWN_NAMES} more)"
        table.add_row(
            str(len(group)),
            escape(names),
            (first.job_id or "") if len(group) == 1 else "",
            f"[{STYLES.get(first.status, '')}]{first.status}[/]",
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
