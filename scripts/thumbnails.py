#!/usr/bin/env python
"""Thumbnails for a folder of photos, with a CSV report: a batch script on the filejobs client.

    python scripts/thumbnails.py ~/Pictures/2024 --out thumbs/ --size 320 --format webp
    python scripts/thumbnails.py photos --out thumbs --server https://filejobs.example.com --concurrency 8

Every image under FOLDER (``.jpg .jpeg .png .gif .webp .bmp .tif .tiff``, any case, recursively,
hidden files and folders skipped) goes to the ``thumbnail`` processor; at most ``--concurrency``
photos are in flight at once (uploading, processing or downloading), so a folder of 50,000 photos
neither floods the server nor fills memory. Each thumbnail is written next to its relative path
under ``--out``: ``photos/2024/beach.jpg`` → ``thumbs/2024/beach.thumb.webp`` (when two photos in
one folder share a stem, such as ``a.jpg`` and ``a.png``, both are named in full:
``a.jpg.thumb.webp``, ``a.png.thumb.webp``).

The report (``--report``, default ``OUT/report.csv``) has one row per photo: ``path, job_id,
status, original`` (``WxH`` as displayed, after EXIF orientation) ``, thumbnail`` (``WxH``)
``, bytes`` (of the thumbnail) ``, thumbnail_path, error`` (``code: message``). It is written
even after Ctrl-C, with the photos finished so far.

The server comes from ``--server`` / ``FILEJOBS_URL`` and the key from ``--api-key`` /
``FILEJOBS_API_KEY``. Exit status: 0 when every photo got a thumbnail, 1 otherwise, 130 on
Ctrl-C. Needs the ``filejobs`` package (its client) installed. For a resumable batch with progress
bars, use ``filejobs submit FOLDER --processor thumbnail --results OUT --ledger FILE`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from filejobs.client import AsyncClient, FilejobsError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
EXTENSIONS = {"webp": "webp", "png": "png", "jpeg": "jpg"}


@dataclass
class Row:
    path: str
    job_id: str = ""
    status: str = "not started"
    original: str = ""
    thumbnail: str = ""
    bytes: int | str = ""
    thumbnail_path: str = ""
    error: str = ""


def photos(folder: Path) -> list[Path]:
    """Every image below ``folder`` (hidden files and folders skipped), sorted."""
    found = []
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found)


def thumbnail_names(relpaths: list[Path], fmt: str) -> dict[Path, Path]:
    """``a/b.jpg`` → ``a/b.thumb.webp``; photos sharing a folder and stem keep their whole name."""
    ext = EXTENSIONS[fmt]
    seen: dict[tuple[Path, str], int] = {}
    for rel in relpaths:
        seen[(rel.parent, rel.stem.lower())] = seen.get((rel.parent, rel.stem.lower()), 0) + 1
    return {
        rel: rel.parent / f"{rel.stem if seen[(rel.parent, rel.stem.lower())] == 1 else rel.name}.thumb.{ext}"
        for rel in relpaths
    }


def size_text(part: object) -> str:
    return f"{part['width']}x{part['height']}" if isinstance(part, dict) else ""


async def thumbnail(
    client: AsyncClient,
    slots: asyncio.Semaphore,
    path: Path,
    target: Path,
    params: dict[str, object],
    row: Row,
) -> None:
    async with slots:
        try:
            job = await client.submit(path, processor="thumbnail", params=params)
            row.job_id, row.status = job.id, job.status
            job = await client.wait(job.id)
            row.status = job.status
            if job.error is not None:
                row.error = f"{job.error.code}: {job.error.message}"
            result = job.result or {}
            row.original = size_text(result.get("original"))
            row.thumbnail = size_text(result.get("thumbnail"))
            row.bytes = (result.get("thumbnail") or {}).get("bytes", "")
            if job.status == "succeeded":
                await client.result(job.id, to=target)
                row.thumbnail_path = str(target)
        except FilejobsError as exc:
            row.status = row.status if row.job_id else "rejected"
            row.error = str(exc)
    print(f"{row.status:>9}  {path}", file=sys.stderr)


async def run(args: argparse.Namespace, rows: list[Row]) -> None:
    folder: Path = args.folder
    found = photos(folder)
    names = thumbnail_names([p.relative_to(folder) for p in found], args.format)
    params = {"size": args.size, "format": args.format}
    slots = asyncio.Semaphore(args.concurrency)
    rows.extend(Row(str(p)) for p in found)
    async with AsyncClient(args.server, api_key=args.api_key) as client:
        await asyncio.gather(
            *(
                thumbnail(client, slots, p, args.out / names[p.relative_to(folder)], params, row)
                for p, row in zip(found, rows, strict=True)
            )
        )


def write_report(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(Row)])
        for row in rows:
            writer.writerow([getattr(row, f.name) for f in fields(Row)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Make thumbnails of every photo in a folder with filejobs, and a CSV report.",
        epilog="Exit status: 0 when every photo got a thumbnail, 1 otherwise, 130 on Ctrl-C.",
    )
    parser.add_argument("folder", type=Path, help="the folder of photos (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="where the thumbnails go")
    parser.add_argument("--size", type=int, default=256, help="longest edge in pixels (default 256)")
    parser.add_argument("--format", choices=sorted(EXTENSIONS), default="webp", help="default webp")
    parser.add_argument("--report", type=Path, help="the CSV report (default OUT/report.csv)")
    parser.add_argument("--concurrency", type=int, default=4, help="photos in flight at once (default 4)")
    parser.add_argument("--server", help="the filejobs URL (default $FILEJOBS_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="the API key (default $FILEJOBS_API_KEY)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    report = args.report or args.out / "report.csv"
    rows: list[Row] = []
    code = 0
    try:
        asyncio.run(run(args, rows))
    except KeyboardInterrupt:
        code = 130
    write_report(report, rows)
    done = sum(row.status == "succeeded" for row in rows)
    print(f"{len(rows)} photos, {done} thumbnails; report: {report}", file=sys.stderr)
    return code or (0 if done == len(rows) else 1)


if __name__ == "__main__":
    sys.exit(main())
