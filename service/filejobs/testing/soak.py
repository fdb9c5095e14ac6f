"""Concurrent uploaders against a running filejobs server: the load, the counting, the drain.

Shared by ``tests/faults/test_concurrent_uploaders.py`` (50 uploaders for a minute, in CI) and
``scripts/soak_uploads.py`` (as many and as long as you like, against any server).

Each uploader is a thread with its own ``httpx.Client`` (keep-alive, like a real client). In a
loop until the deadline it uploads a file of random size (1-64 KiB by default; random bytes or
text) and, now and then, reads a job it made (sometimes long-polling it) or lists jobs. Every
answer is counted by kind and status; any answer or transport error that mentions
"database is locked" is counted as such; a 429/503 with ``Retry-After`` is honoured (backpressure,
counted, not an error). :func:`drain` then waits until nothing is queued or running and reads
back every job the uploaders were given a 202 for.
"""

from __future__ import annotations

import random
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

KiB = 1024
LOCKED = "database is locked"
#: Statuses that mean "later, please": honoured, counted, not failures.
BACKPRESSURE = frozenset({429, 503})
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_WORDS = b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()


@dataclass(frozen=True)
class SoakConfig:
    base_url: str
    uploaders: int = 50
    seconds: float = 60.0
    min_bytes: int = 1 * KiB
    max_bytes: int = 64 * KiB
    processor: str = "inspect"
    #: Chance, after each upload, of also reading a job or the list.
    poll_chance: float = 0.25
    seed: int = 20261130
    timeout: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Totals:
    """What the uploaders saw. Thread-safe to add to."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    upload_latencies: list[float] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    locked: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    backpressure_waits: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer(self, kind: str, response: httpx.Response, latency: float | None = None) -> None:
        text = response.text
        with self._lock:
            self.statuses[(kind, response.status_code)] += 1
            if latency is not None:
                self.upload_latencies.append(latency)
            if LOCKED in text.lower():
                self.locked.append(f"{kind} {response.status_code}: {text[:300]}")
            if response.status_code >= 500 and response.status_code not in BACKPRESSURE:
                self.server_errors.append(f"{kind} {response.status_code}: {text[:300]}")

    def error(self, kind: str, exc: BaseException) -> None:
        message = f"{kind}: {type(exc).__name__}: {exc}"
        with self._lock:
            self.statuses[(kind, 0)] += 1
            self.transport_errors.append(message)
            if LOCKED in message.lower():
                self.locked.append(message)

    @property
    def uploads(self) -> int:
        return sum(n for (kind, _), n in self.statuses.items() if kind == "upload")

    @property
    def five_xx(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)

    @property
    def rate(self) -> float:
        return self.uploads / max(self.seconds, 1e-9)

    def percentile(self, fraction: float) -> float:
        values = sorted(self.upload_latencies)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(fraction * len(values)))]

    def report(self) -> str:
        by_kind: dict[str, dict[int, int]] = {}
        for (kind, status), count in sorted(self.statuses.items()):
            by_kind.setdefault(kind, {})[status] = count
        lines = [
            f"uploads: {self.uploads} in {self.seconds:.1f} s = {self.rate:.1f}/s, "
            f"accepted {len(self.accepted)}, {self.uploaded_bytes / KiB / KiB:.1f} MiB",
            f"upload latency: p50 {self.percentile(0.50) * 1000:.0f} ms, "
            f"p99 {self.percentile(0.99) * 1000:.0f} ms, "
            f"max {max(self.upload_latencies, default=0.0) * 1000:.0f} ms"
            + (
                f", mean {statistics.fmean(self.upload_latencies) * 1000:.0f} ms"
                if self.upload_latencies
                else ""
            ),
            "answers: "
            + "; ".join(f"{kind} {dict(codes)}" for kind, codes in by_kind.items())
            + " (0: no answer)",
            f"'{LOCKED}': {len(self.locked)}, 5xx: {self.five_xx}, transport errors: "
            f"{len(self.transport_errors)}, unexpected: {len(self.unexpected)}, "
            f"backpressure waits: {self.backpressure_waits}",
        ]
        return "\n".join(lines)


def _content(rng: random.Random, size: int) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(size)
    words = [rng.choice(_WORDS) for _ in range(size // 5 + 1)]
    return b" ".join(words)[:size] + b"\n"


def _wait_out(response: httpx.Response, totals: Totals, deadline: float) -> None:
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    with totals._lock:
        totals.backpressure_waits += 1
    time.sleep(max(0.0, min(seconds, 2.0, deadline - time.monotonic())))


def _uploader(index: int, config: SoakConfig, totals: Totals, deadline: float) -> None:
    rng = random.Random(config.seed * 1000 + index)
    mine: list[str] = []
    with httpx.Client(base_url=config.base_url, timeout=config.timeout, headers=config.headers) as client:
        while time.monotonic() < deadline:
            size = rng.randint(config.min_bytes, config.max_bytes)
            data = _content(rng, size)
            began = time.monotonic()
            try:
                response = client.post(
                    "/v1/jobs",
                    files={"file": (f"u{index}-{len(mine)}.bin", data, "application/octet-stream")},
                    data={"processor": config.processor},
                )
            except httpx.HTTPError as exc:
                totals.error("upload", exc)
                continue
            totals.answer("upload", response, time.monotonic() - began)
            if response.status_code == 202:
                job_id = response.json()["id"]
                mine.append(job_id)
                with totals._lock:
                    totals.accepted.append(job_id)
                    totals.uploaded_bytes += size
            elif response.status_code in BACKPRESSURE:
                _wait_out(response, totals, deadline)
                continue
            else:
                with totals._lock:
                    totals.unexpected.append(f"upload {response.status_code}: {response.text[:300]}")
            if rng.random() < config.poll_chance and time.monotonic() < deadline:
                _poll(client, rng, mine, totals)


def _poll(client: httpx.Client, rng: random.Random, mine: list[str], totals: Totals) -> None:
    roll = rng.random()
    try:
        if mine and roll < 0.45:
            kind, response = "status", client.get(f"/v1/jobs/{rng.choice(mine)}")
        elif mine and roll < 0.6:
            # A short long-poll: returns at the first change (or after 0.5 s).
            kind, response = "wait", client.get(f"/v1/jobs/{mine[-1]}", params={"wait": 0.5})
        else:
            kind, response = "list", client.get("/v1/jobs", params={"limit": rng.choice([10, 50, 200])})
    except httpx.HTTPError as exc:
        totals.error("poll", exc)
        return
    totals.answer(kind, response)
    if response.status_code != 200 and response.status_code not in BACKPRESSURE:
        with totals._lock:
            totals.unexpected.append(f"{kind} {response.status_code}: {response.text[:300]}")


def run_uploaders(config: SoakConfig) -> Totals:
    """``config.uploaders`` threads uploading for ``config.seconds``; what they saw."""
    totals = Totals()
    start = threading.Event()
    deadline: list[float] = []  # set once every thread is ready, just before they are let go

    def run(index: int) -> None:
        start.wait()
        _uploader(index, config, totals, deadline[0])

    threads = [
        threading.Thread(target=run, args=(i,), name=f"uploader-{i}", daemon=True)
        for i in range(config.uploaders)
    ]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline.append(began + config.seconds)
    start.set()
    for thread in threads:
        thread.join(config.seconds + config.timeout + 30)
    totals.seconds = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "an uploader did not finish"
    return totals


# ---- afterwards -------------------------------------------------------------------------------


def all_jobs(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every job the server lists (all pages), by id."""
    jobs: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/v1/jobs", params=params)
        response.raise_for_status()
        page = response.json()
        jobs.update((item["id"], item) for item in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return jobs


def newest(client: httpx.Client, status: str) -> str | None:
    """The id of the newest job in ``status``, if any (one row, one cheap query)."""
    response = client.get("/v1/jobs", params={"status": status, "limit": 1})
    response.raise_for_status()
    items = response.json()["items"]
    return str(items[0]["id"]) if items else None


def count(client: httpx.Client, status: str) -> int:
    """How many jobs are in ``status`` (all pages)."""
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"status": status, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/v1/jobs", params=params)
        response.raise_for_status()
        page = response.json()
        total += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


@dataclass
class Drain:
    #: Jobs queued or running when the drain began.
    backlog: int
    seconds: float
    statuses: Counter[str]
    missing: list[str]
    not_succeeded: list[dict[str, Any]]


def drain(
    base_url: str, accepted: list[str], *, timeout: float, headers: dict[str, str] | None = None
) -> Drain:
    """Wait (up to ``timeout`` s) until no job is queued or running, then read every job back and
    compare with ``accepted``.

    The wait long-polls the newest queued job (it changes when it is claimed, near the end), then
    the newest running one: a handful of light requests, so the drain measures the workers, not
    the polling."""
    began = time.monotonic()
    deadline = began + timeout
    with httpx.Client(base_url=base_url, timeout=60.0, headers=headers or {}) as client:
        backlog = count(client, "queued") + count(client, "running")
        while time.monotonic() < deadline:
            job_id = newest(client, "queued") or newest(client, "running")
            if job_id is None:
                break
            wait = min(10.0, max(0.1, deadline - time.monotonic()))
            client.get(f"/v1/jobs/{job_id}", params={"wait": wait})
        jobs = all_jobs(client)
    wanted = set(accepted)
    return Drain(
        backlog=backlog,
        seconds=time.monotonic() - began,
        statuses=Counter(job["status"] for job_id, job in jobs.items() if job_id in wanted),
        missing=sorted(wanted - jobs.keys()),
        not_succeeded=[
            {"id": job_id, "status": job["status"], "error": job.get("error")}
            for job_id, job in jobs.items()
            if job_id in wanted and job["status"] != "succeeded"
        ],
    )


def locked_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if LOCKED in line.lower()]


_BUCKET = re.compile(r'^filejobs_upload_duration_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.MULTILINE)


def server_upload_quantiles(
    base_url: str, fractions: tuple[float, ...] = (0.5, 0.99), headers: dict[str, str] | None = None
) -> dict[float, float] | None:
    """Upper bounds of the server's own upload-duration quantiles (from the start of the body to
    the row recorded), read off ``/metrics``'s histogram buckets; None when there is none."""
    try:
        response = httpx.get(f"{base_url}/metrics", headers=headers or {}, timeout=10.0)
    except httpx.HTTPError:
        return None
    buckets = [(float(le), float(n)) for le, n in _BUCKET.findall(response.text)]
    if response.status_code != 200 or not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return {q: next(le for le, n in buckets if n >= q * total) for q in fractions}
