"""Rich tables of jobs and processors for the one-job commands."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from filejobs.cli.common import human_bytes
from filejobs.cli.display import STYLES
from filejobs.client import Job, ProcessorInfo


def status_text(status: str) -> str:
    return f"[{STYLES.get(status, '')}]{status}[/]"


def when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def short_json(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_table(job: Job) -> Table:
    """One job, field by field."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("status", status_text(job.status)),
        ("processor", escape(job.processor)),
        ("params", escape(short_json(job.params)) if job.params else ""),
        ("file", f"{escape(job.file.name)} ({human_bytes(job.file.size)}, {escape(job.file.content_type)})"),
        ("sha256", job.file.sha256),
        ("progress", f"{job.progress:.0%}" + (f" {escape(job.message)}" if job.message else "")),
        ("attempts", str(job.attempts)),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ]
    if job.error is not None:
        rows.append(("error", f"[red]{escape(job.error.code)}[/red]: {escape(job.error.message)}"))
    if job.result is not None:
        rows.append(("result", escape(short_json(job.result, 400))))
    for name, value in rows:
        table.add_row(name, value)
    return table


def jobs_table(jobs: list[Job]) -> Table:
    table = Table()
    table.add_column("Job", no_wrap=True)
    table.add_column("Status")
    table.add_column("Processor")
    table.add_column("File", overflow="fold")
    table.add_column("Size", justify="right")
    table.add_column("Progress", justify="right")
    table.add_column("Created")
    table.add_column("Error", overflow="fold")
    for job in jobs:
        table.add_row(
            job.id,
            status_text(job.status),
            escape(job.processor),
            escape(job.file.name),
            human_bytes(job.file.size),
            f"{job.progress:.0%}",
            when(job.created_at),
            escape(f"{job.error.code}: {job.error.message}") if job.error else "",
        )
    return table


def processors_table(processors: list[ProcessorInfo]) -> Table:
    table = Table()
    table.add_column("Processor", no_wrap=True, style="bold")
    table.add_column("Description", overflow="fold", ratio=3)
    table.add_column("Accepts", overflow="fold", ratio=1)
    table.add_column("Params", overflow="fold", ratio=2)
    for info in processors:
        properties = info.params_schema.get("properties") or {}
        params = ", ".join(
            f"{name}" + (f"={short_json(spec['default'], 30)}" if "default" in spec else "")
            for name, spec in properties.items()
            if isinstance(spec, dict)
        )
        table.add_row(
            escape(info.name),
            escape(info.description),
            escape(", ".join(info.accepts) or "any"),
            escape(params),
        )
    return table
