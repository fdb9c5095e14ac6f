#!/usr/bin/env python
"""Profile every CSV in a tree and write one summary: a batch script on the filejobs client.

    python scripts/profile_csvs.py exports/ --out summary.md
    python scripts/profile_csvs.py exports/ --out summary.csv --params '{"sample_values": 0}'

Every ``.csv`` and ``.tsv`` file under TREE (any case, recursively, hidden files and folders
skipped) goes to the ``csv-profile`` processor, at most ``--concurrency`` at a time (uploading or
being profiled). The profile is the job's JSON result, so nothing is downloaded but the job body.

``--out`` ending in ``.md`` writes Markdown: an overview table (file, status, rows, columns,
malformed rows, encoding, delimiter) and, per file, its columns (name, type, nulls, distinct,
min, max) and the first malformed line numbers. ``--out`` ending in ``.csv`` writes one row per
file: ``path, job_id, status, rows, columns, malformed_rows, encoding, delimiter, has_header,
column_types`` (``name:type; name:type; …``) ``, error``.

The server comes from ``--server`` / ``FILEJOBS_URL`` and the key from ``--api-key`` /
``FILEJOBS_API_KEY``. Exit status: 0 when every file was profiled, 1 otherwise, 130 on Ctrl-C
(the summary is still written, with the files finished so far). Needs the ``filejobs`` package
(its client) installed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filejobs.client import AsyncClient, FilejobsError

SUFFIXES = {".csv", ".tsv"}


@dataclass
class Profile:
    path: str
    job_id: str = ""
    status: str = "not started"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def get(self, name: str) -> Any:
        return self.result.get(name, "")


def csv_files(tree: Path) -> list[Path]:
    return sorted(
        p
        for p in tree.rglob("*")
        if p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(tree).parts)
        and p.is_file()
    )


async def profile(
    client: AsyncClient, slots: asyncio.Semaphore, path: Path, params: dict[str, Any], row: Profile
) -> None:
    async with slots:
        try:
            job = await client.submit(path, processor="csv-profile", params=params)
            row.job_id, row.status = job.id, job.status
            job = await client.wait(job.id)
            row.status, row.result = job.status, job.result or {}
            if job.error is not None:
                row.error = f"{job.error.code}: {job.error.message}"
        except FilejobsError as exc:
            row.status = row.status if row.job_id else "rejected"
            row.error = str(exc)
    print(f"{row.status:>9}  {path}", file=sys.stderr)


async def run(args: argparse.Namespace, rows: list[Profile]) -> None:
    found = csv_files(args.tree)
    rows.extend(Profile(str(p.relative_to(args.tree))) for p in found)
    slots = asyncio.Semaphore(args.concurrency)
    async with AsyncClient(args.server, api_key=args.api_key) as client:
        await asyncio.gather(
            *(profile(client, slots, p, args.params, row) for p, row in zip(found, rows, strict=True))
        )


def delimiter_name(value: Any) -> str:
    return {"\t": "tab", " ": "space"}.get(value, value) if isinstance(value, str) else ""


def cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def write_markdown(path: Path, tree: Path, rows: list[Profile]) -> None:
    ok = sum(r.status == "succeeded" for r in rows)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017 - readable in 3.11
    lines = [f"# CSV profile of `{tree}`", "", f"{len(rows)} files, {ok} profiled ({now}).", ""]
    lines += [
        "| File | Status | Rows | Columns | Malformed rows | Encoding | Delimiter |",
        "|---|---|--:|--:|--:|---|---|",
    ]
    for r in rows:
        delimiter = f"`{cell(delimiter_name(r.get('delimiter')))}`" if r.result else ""
        lines.append(
            f"| {cell(r.path)} | {cell(r.status)} | {r.get('row_count')} | {r.get('column_count')} | "
            f"{r.get('malformed_rows')} | {cell(r.get('encoding'))} | {delimiter} |"
        )
    for r in rows:
        lines += ["", f"## {r.path}", ""]
        if r.status != "succeeded":
            lines.append(f"**{r.status}**: {cell(r.error) or 'no result'}")
            continue
        malformed = r.get("malformed_rows")
        first = ", ".join(str(n) for n in r.get("malformed_lines") or [])
        lines.append(
            f"{r.get('row_count')} rows, {r.get('column_count')} columns, header: "
            f"{'yes' if r.get('has_header') else 'no'}, malformed rows: {malformed}"
            + (f" (lines {first})" if first else "")
        )
        lines += ["", "| Column | Type | Nulls | Distinct | Min | Max |", "|---|---|--:|--:|---|---|"]
        for col in r.get("columns") or []:
            lines.append(
                f"| {cell(col.get('name'))} | {cell(col.get('type'))} | {col.get('null_count')} | "
                f"{col.get('distinct')} | {cell(col.get('min'))} | {cell(col.get('max'))} |"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[Profile]) -> None:
    names = ["path", "job_id", "status", "rows", "columns", "malformed_rows", "encoding", "delimiter"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "has_header", "column_types", "error"])
        for r in rows:
            types = "; ".join(f"{c.get('name')}:{c.get('type')}" for c in r.get("columns") or [])
            writer.writerow(
                [
                    r.path,
                    r.job_id,
                    r.status,
                    r.get("row_count"),
                    r.get("column_count"),
                    r.get("malformed_rows"),
                    r.get("encoding"),
                    delimiter_name(r.get("delimiter")),
                    r.get("has_header"),
                    types,
                    r.error,
                ]
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Profile every CSV/TSV file in a tree with filejobs' csv-profile and write a summary.",
        epilog="Exit status: 0 when every file was profiled, 1 otherwise, 130 on Ctrl-C.",
    )
    parser.add_argument("tree", type=Path, help="the folder to search (recursively) for .csv and .tsv files")
    parser.add_argument("--out", type=Path, required=True, help="the summary: a .md or a .csv file")
    parser.add_argument("--params", type=json.loads, default={}, help="csv-profile params, a JSON object")
    parser.add_argument("--concurrency", type=int, default=4, help="files in flight at once (default 4)")
    parser.add_argument("--server", help="the filejobs URL (default $FILEJOBS_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="the API key (default $FILEJOBS_API_KEY)")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in (".md", ".csv"):
        parser.error("--out must end in .md or .csv")
    if not args.tree.is_dir():
        parser.error(f"{args.tree} is not a folder")
    if not isinstance(args.params, dict):
        parser.error("--params must be a JSON object")
    rows: list[Profile] = []
    code = 0
    try:
        asyncio.run(run(args, rows))
    except KeyboardInterrupt:
        code = 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".md":
        write_markdown(args.out, args.tree, rows)
    else:
        write_csv(args.out, rows)
    ok = sum(r.status == "succeeded" for r in rows)
    print(f"{len(rows)} files, {ok} profiled; summary: {args.out}", file=sys.stderr)
    return code or (0 if ok == len(rows) else 1)


if __name__ == "__main__":
    sys.exit(main())
