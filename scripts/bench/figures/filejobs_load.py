"""Helpers shared by the request-rate figures (small, status, jobs, busy, listing): the environment
of a benchmarked filejobs, small multipart bodies, a light keep-alive HTTP client for load, and
waiting on jobs with deadlines."""

from __future__ import annotations

import contextlib
import http.client
import json
import sqlite3
import statistics
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from scripts.bench.common import Body

#: The admission limits would answer 429/503/507 in a benchmark of thousands of jobs.
OPEN_LIMITS = {
    "FILEJOBS_MAX_UNFINISHED_JOBS": "100000000",
    "FILEJOBS_MAX_QUEUE_DEPTH": "100000000",
    "FILEJOBS_MIN_FREE_DISK": "0",
    # Every job runs: the figures upload the same file again and again (the reuse group turns it on).
    "FILEJOBS_REUSE": "false",
}
TERMINAL = {"succeeded", "failed", "cancelled"}


def filejobs_env(**extra: str) -> dict[str, str]:
    """The benchmarked filejobs' environment: no admission limits, no API keys, plus ``extra``."""
    return {**OPEN_LIMITS, **extra}


def median(values: Iterable[float]) -> float:
    """The median of ``values`` as a float."""
    return float(statistics.median(list(values)))


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def small_body(size: int = 1024, name: str = "small.txt") -> Body:
    """A multipart body holding one text file of ``size`` bytes (the same bytes for every app)."""
    line = b"filejobs benchmark: a small text file, the same for every app.\n"
    return Body((line * (size // len(line) + 1))[:size], 1, name=name)


def db_path(data_dir: Path) -> Path:
    """filejobs' SQLite file in ``data_dir`` (its default DATABASE_URL)."""
    return data_dir / "filejobs.db"


def count_jobs(data_dir: Path) -> int:
    """Rows in filejobs' ``jobs`` table, read straight from its SQLite file (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path(data_dir)}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def parse_time(stamp: str) -> float:
    """A job body's timestamp (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class KeepAlive:
    """One keep-alive HTTP/1.1 connection (``http.client``: far lighter than httpx, so a load of
    Python threads costs the machine little next to the server under test)."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        assert parts.hostname
        assert parts.port
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request and read the whole answer: (status, body)."""
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        return response.status, response.read()

    def post_json(self, path: str, body: bytes, headers: dict[str, str], expect: int = 202) -> dict[str, Any]:
        """POST ``body``; the JSON answer, or RuntimeError unless the status is ``expect``."""
        status, data = self.request("POST", path, body, headers)
        if status != expect:
            raise RuntimeError(f"POST {path}: {status} {data[:300]!r}")
        answer: dict[str, Any] = json.loads(data)
        return answer

    def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path``; the JSON answer, or RuntimeError unless 200."""
        status, data = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
        answer: dict[str, Any] = json.loads(data)
        return answer

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submit(
    client: httpx.Client, data: bytes, name: str, processor: str = "inspect", params: str = "{}"
) -> str:
    """Submit one job to filejobs; its id (RuntimeError unless 202)."""
    response = client.post(
        "/v1/jobs",
        files={"file": (name, data, "application/octet-stream")},
        data={"processor": processor, "params": params},
    )
    if response.status_code != 202:
        raise RuntimeError(f"submit {name}: {response.status_code} {response.text[:300]}")
    job_id: str = response.json()["id"]
    return job_id


def wait_finished(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """The job once finished: a plain GET, then long-polls (``?wait=`` with ``If-None-Match``, which
    answer as soon as the job changes) while it is not; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    params: dict[str, float] = {}
    headers: dict[str, str] = {}
    while True:
        response = client.get(f"/v1/jobs/{job_id}", params=params, headers=headers)
        if response.status_code not in (200, 304):
            raise RuntimeError(f"job {job_id}: {response.status_code} {response.text[:300]}")
        if response.status_code == 200:
            job: dict[str, Any] = response.json()
            headers = {"If-None-Match": response.headers["ETag"]}
            if job["status"] in TERMINAL:
                return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"job {job_id} did not finish within {timeout:g} s: {job['status']}")
        params = {"wait": min(10.0, max(0.1, remaining))}


def iter_jobs(client: httpx.Client, status: str | None = None, page: int = 500) -> Iterator[dict[str, Any]]:
    """Every job of ``GET /v1/jobs`` (newest first), walking the cursors."""
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": page}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        response = client.get("/v1/jobs", params=params)
        if response.status_code != 200:
            raise RuntimeError(f"GET /v1/jobs: {response.status_code} {response.text[:300]}")
        body = response.json()
        yield from body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return


def cpu_seconds(procs: Iterable[psutil.Process]) -> dict[int, float]:
    """User + system CPU seconds each of ``procs`` used so far, by pid (vanished ones left out)."""
    used = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            used[proc.pid] = times.user + times.system
    return used


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two :func:`cpu_seconds` readings; a process that appeared in
    between counts in full (one that vanished in between is lost: keep the window short)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
