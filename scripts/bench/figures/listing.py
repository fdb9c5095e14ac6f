"""``GET /v1/jobs`` latency at 100k rows: the first page against a deep page, with and without a
``status=`` filter.

The database is made fast: filejobs starts once with ``FILEJOBS_WORKERS=0`` (its migrations make
the schema) and takes one real upload, whose row is the template; it is stopped, and
:data:`ROWS` rows are inserted straight into its SQLite file in one transaction (ids are UUIDv7
like the service's, ``created_at`` spread over the past two days in id order, statuses mixed:
70 % succeeded with an ``inspect``-like result, 10 % failed, 5 % cancelled, 15 % queued). filejobs
starts again on that database (still with no workers, so nothing changes under the measurement).

Each measurement is :data:`REQUESTS` sequential ``limit=50`` requests on one keep-alive connection
(http.client, so the client adds little to the server's time): the first page; a deep page (the
cursor after about 90 % of the matching rows, reached by walking the cursors with ``limit=500``);
and the same two with ``status=failed`` (the rarer status: its deep page is the further one in the
index). Reported: p50 of each (median over rounds), p99 in the notes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from scripts.bench.common import Context, filejobs_server
from scripts.bench.figures.filejobs_load import (
    KeepAlive,
    db_path,
    filejobs_env,
    median,
    percentile,
    small_body,
    submit,
)
from scripts.bench.report import Figure

ROWS = 100_000
PAGE = 50
WALK_PAGE = 500  # the largest limit the API allows
DEEP_FRACTION = 0.9
REQUESTS = 250
STATUS_FILTER = "failed"
STATUSES = (("succeeded", 70), ("failed", 10), ("cancelled", 5), ("queued", 15))
P50_TARGET_MS = 10.0
DEEP_RATIO = 1.5
CASES = ("first", "deep", "status_first", "status_deep")
RESULT = {
    "size": 1024,
    "sha256": "0" * 64,
    "md5": "0" * 32,
    "mime_type": "text/plain",
    "is_text": True,
    "encoding": "utf-8",
    "lines": 17,
    "words": 178,
}


def uuid7(millis: int, rng: random.Random) -> str:
    """A UUIDv7 string for ``millis`` (Unix ms), random below: the layout of filejobs.ids."""
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62
    return str(uuid.UUID(int=value | rng.getrandbits(62)))


def stamp(when: datetime) -> str:
    """How SQLAlchemy stores a UTC datetime in SQLite (naive, microseconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def template_row(data_dir: Path) -> dict[str, Any]:
    """The one row the real upload left: every column, with the service's own values."""
    with contextlib.closing(sqlite3.connect(db_path(data_dir))) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM jobs").fetchone()
    if row is None:
        raise RuntimeError("the template upload left no row")
    return dict(row)


def synthetic_rows(template: dict[str, Any], count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` rows like ``template``, created over the past two days in id order."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(minutes=1)
    span = timedelta(days=2)
    names = [name for name, _ in STATUSES]
    weights = [weight for _, weight in STATUSES]
    result = json.dumps(RESULT)
    rows = []
    for index in range(count):
        created = now - span + span * index / count
        status = rng.choices(names, weights)[0]
        job_id = uuid7(int(created.timestamp() * 1000), rng)
        started = created + timedelta(milliseconds=40)
        finished = started + timedelta(milliseconds=150)
        done = status != "queued"
        row = dict(template)
        row.update(
            id=job_id,
            status=status,
            file_name=f"file-{index}.txt",
            storage_key=f"uploads/{job_id}",
            progress=1.0 if status == "succeeded" else 0.0,
            attempts=1 if done else 0,
            result=result if status == "succeeded" else None,
            error_code="bench_failure" if status == "failed" else None,
            error_message="A failure made up by the benchmark." if status == "failed" else None,
            created_at=stamp(created),
            updated_at=stamp(finished if done else created),
            run_after=stamp(created),
            started_at=stamp(started) if done else None,
            finished_at=stamp(finished) if done else None,
            lease_owner=None,
            lease_expires_at=None,
            version=3 if done else 1,
        )
        rows.append(row)
    return rows


def bulk_insert(data_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into the stopped service's database in one transaction, then checkpoint."""
    columns = list(rows[0])
    sql = f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    with contextlib.closing(sqlite3.connect(db_path(data_dir), isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.executemany(sql, ([row[c] for c in columns] for row in rows))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def make_database(ctx: Context, data_dir: Path, count: int) -> None:
    """A filejobs data dir whose database holds ``count`` + 1 jobs (see the module docstring)."""
    with filejobs_server(data_dir, filejobs_env(FILEJOBS_WORKERS="0")) as server, server.client() as client:
        submit(client, small_body().block, "template.txt")
    started = time.perf_counter()
    bulk_insert(data_dir, synthetic_rows(template_row(data_dir), count))
    size = os.path.getsize(db_path(data_dir)) / 2**20
    ctx.say(f"   {count} rows inserted in {time.perf_counter() - started:.1f} s ({size:.0f} MiB database)")


def deep_cursor(base_url: str, status: str | None, skip: int) -> str:
    """The cursor after the first ``skip`` jobs (newest first) matching ``status``, by walking the
    cursors :data:`WALK_PAGE` at a time."""
    cursor: str | None = None
    seen = 0
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while seen < skip:
            params: dict[str, Any] = {"limit": min(WALK_PAGE, skip - seen)}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            body = client.get("/v1/jobs", params=params).raise_for_status().json()
            seen += len(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                raise RuntimeError(f"only {seen} jobs match status={status}; wanted to skip {skip}")
    assert cursor is not None
    return cursor


@dataclass
class Timing:
    """Latency percentiles (ms) of one measurement."""

    p50: float
    p99: float


def time_page(base_url: str, query: dict[str, Any], requests: int) -> Timing:
    """``requests`` sequential GETs of ``/v1/jobs?<query>`` on one keep-alive connection; each must
    answer 200 with a full page. Latencies in ms."""
    path = "/v1/jobs?" + urlencode(query)
    latencies = []
    with KeepAlive(base_url) as conn:
        if len(conn.get_json(path)["items"]) != query["limit"]:  # and warms the connection up
            raise RuntimeError(f"{path} did not answer a full page")
        for _ in range(requests):
            started = time.perf_counter()
            status, body = conn.request("GET", path)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
    return Timing(p50=percentile(latencies, 50), p99=percentile(latencies, 99))


def run(ctx: Context) -> list[Figure]:
    """Make the database, then time first and deep pages (all jobs, then one status) per round."""
    rows = 2_000 if ctx.smoke else ROWS
    requests = 30 if ctx.smoke else REQUESTS
    data_dir = ctx.subdir("listing") / "filejobs"
    make_database(ctx, data_dir, rows)
    timings: dict[str, list[Timing]] = {name: [] for name in CASES}
    with filejobs_server(data_dir, filejobs_env(FILEJOBS_WORKERS="0")) as server:
        failed = _count(server.base_url, STATUS_FILTER)
        deep, status_deep = _deep(rows), _deep(failed)
        cases: dict[str, dict[str, Any]] = {
            "first": {"limit": PAGE},
            "deep": {"limit": PAGE, "cursor": deep_cursor(server.base_url, None, deep)},
            "status_first": {"limit": PAGE, "status": STATUS_FILTER},
            "status_deep": {
                "limit": PAGE,
                "status": STATUS_FILTER,
                "cursor": deep_cursor(server.base_url, STATUS_FILTER, status_deep),
            },
        }
        for query in cases.values():  # warm up: the page cache, the connection pool
            time_page(server.base_url, query, 5)
        for round_no in range(ctx.rounds):
            for name, query in cases.items():
                timings[name].append(time_page(server.base_url, query, requests))
            ctx.say(
                f"   round {round_no + 1}: p50 "
                + ", ".join(f"{name} {timings[name][-1].p50:.1f} ms" for name in cases)
            )
    return _figures(ctx, timings, rows, requests, failed)


def _deep(matching: int) -> int:
    """How many of ``matching`` jobs the deep page skips: about 90 %, leaving a full page after."""
    return max(0, min(int(matching * DEEP_FRACTION), matching - 2 * PAGE))


def _count(base_url: str, status: str) -> int:
    """How many jobs have ``status`` (walking the whole list: done once, before measuring)."""
    seen = 0
    cursor = None
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while True:
            params: dict[str, Any] = {"limit": WALK_PAGE, "status": status}
            if cursor:
                params["cursor"] = cursor
            body = client.get("/v1/jobs", params=params).raise_for_status().json()
            seen += len(body["items"])
            cursor = body["next_cursor"]
            if not cursor:
                return seen


def _figures(
    ctx: Context, timings: dict[str, list[Timing]], rows: int, requests: int, failed: int
) -> list[Figure]:
    """The four figures: p50 medians over rounds, p99 medians in the notes."""
    p50 = {name: median(t.p50 for t in got) for name, got in timings.items()}
    p99 = {name: median(t.p99 for t in got) for name, got in timings.items()}
    how = f"{requests} sequential requests on one keep-alive connection, limit={PAGE}, {rows:,} rows"
    deep_at = f"after {_deep(rows):,} jobs"
    status_deep_at = f"after {_deep(failed):,} of the {failed:,} {STATUS_FILTER} jobs"

    def fast(name: str) -> bool | None:
        """Whether the p50 of ``name`` meets the absolute target (None in smoke)."""
        return None if ctx.smoke else p50[name] < P50_TARGET_MS

    def flat(name: str, first: str) -> bool | None:
        """Whether the deep page ``name`` is fast and close enough to its first page."""
        return None if ctx.smoke else p50[name] < P50_TARGET_MS and p50[name] <= DEEP_RATIO * p50[first]

    return [
        Figure(
            key="list_first_p50_ms",
            label=f"list first page, {rows // 1000}k rows",
            unit="ms",
            value=p50["first"],
            target=f"p50 < {P50_TARGET_MS:g} ms",
            met=fast("first"),
            note=f"{how}; p99 {p99['first']:.1f} ms",
        ),
        Figure(
            key="list_deep_p50_ms",
            label=f"list deep page, {rows // 1000}k rows",
            unit="ms",
            value=p50["deep"],
            baselines={"first page": p50["first"]},
            target=f"p50 < {P50_TARGET_MS:g} ms, <= {DEEP_RATIO:g}x first",
            met=flat("deep", "first"),
            note=f"{how}; the page {deep_at}; p99 {p99['deep']:.1f} ms",
        ),
        Figure(
            key="list_status_first_p50_ms",
            label=f"list status={STATUS_FILTER} first page",
            unit="ms",
            value=p50["status_first"],
            target=f"p50 < {P50_TARGET_MS:g} ms",
            met=fast("status_first"),
            note=f"{how}, {failed:,} of them {STATUS_FILTER}; p99 {p99['status_first']:.1f} ms",
        ),
        Figure(
            key="list_status_deep_p50_ms",
            label=f"list status={STATUS_FILTER} deep page",
            unit="ms",
            value=p50["status_deep"],
            baselines={"first page": p50["status_first"]},
            target=f"p50 < {P50_TARGET_MS:g} ms, <= {DEEP_RATIO:g}x first",
            met=flat("status_deep", "status_first"),
            note=f"{how}; the page {status_deep_at}; p99 {p99['status_deep']:.1f} ms",
        ),
    ]
