"""How long a ``404`` takes for another key's job next to one for an unknown id (issue 14, item 13).

A real ``filejobs serve`` (no workers, no rate limit) with two keys: Alice makes a job, Bob asks
for it on every endpoint that takes an id, and for an unknown id, alternately in a random order per
pair, on one keep-alive connection. The table gives each endpoint's median answer time for both
and their difference (a timing oracle would show as a steady positive difference). Both must be
``404``; Alice's job is checked to be unchanged at the end.

Answer times over HTTP on a shared machine vary by more than the difference looked for, so the
script first times the reads themselves, in this process on a SQLite database (``--reads``
samples each, interleaved): what the routes do for an id, without the HTTP around it.

    python -m scripts.tenant_404_timing --samples 200 --runs 2 --reads 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from filejobs.db import Database
from filejobs.errors import NotFound
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.jobs.fast_read import JobReader
from filejobs.migrate import upgrade
from filejobs.testing import Server, keys_cli, make_job

ENDPOINTS = [
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/result"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("POST", "/v1/jobs/{id}/retry"),
    ("DELETE", "/v1/jobs/{id}"),
]
WARMUP = 30


def timed(client: httpx.Client, method: str, path: str) -> float:
    """Microseconds from sending the request to having the whole answer; it must be a 404."""
    started = time.perf_counter_ns()
    response = client.request(method, path)
    elapsed = (time.perf_counter_ns() - started) / 1000
    assert response.status_code == 404, (method, path, response.status_code, response.text)
    return elapsed


def measure(
    client: httpx.Client, theirs: str, samples: int, rng: random.Random
) -> list[tuple[str, float, float]]:
    unknown = new_job_id()
    rows = []
    for method, template in ENDPOINTS:
        times: dict[str, list[float]] = {theirs: [], unknown: []}
        for index in range(WARMUP + samples):
            pair = [theirs, unknown]
            rng.shuffle(pair)
            for job_id in pair:
                elapsed = timed(client, method, template.format(id=job_id))
                if index >= WARMUP:
                    times[job_id].append(elapsed)
        rows.append(
            (f"{method} {template}", statistics.median(times[theirs]), statistics.median(times[unknown]))
        )
    return rows


def time_reads(work: Path, samples: int, rng: random.Random) -> None:
    """The by-id reads of the routes, for another owner's job and an unknown id: median µs."""
    url = f"sqlite:///{work / 'reads.db'}"
    upgrade(url)
    db = Database(url)
    reader = JobReader(db)
    theirs = repository.insert_job(db, make_job(owner="alice", params={"a": list(range(20))})).id
    unknown = new_job_id()
    loop = asyncio.new_event_loop()

    def cancel(job_id: str) -> None:
        with contextlib.suppress(NotFound):
            repository.cancel_job(db, job_id, owner="bob")

    calls = {
        "JobReader.aget (status, result)": lambda job_id: loop.run_until_complete(
            reader.aget(job_id, owner="bob")
        ),
        "JobReader.get (thread path)": lambda job_id: reader.get(job_id, owner="bob"),
        "repository.get_job": lambda job_id: repository.get_job(db, job_id, owner="bob"),
        "repository.cancel_job (_locked)": cancel,
    }
    print(f"{'read':34} {'theirs µs':>10} {'unknown µs':>11} {'diff µs':>8}   (medians of {samples})")
    try:
        for name, call in calls.items():
            times: dict[str, list[float]] = {theirs: [], unknown: []}
            for index in range(WARMUP + samples):
                pair = [theirs, unknown]
                rng.shuffle(pair)
                for job_id in pair:
                    started = time.perf_counter_ns()
                    call(job_id)
                    if index >= WARMUP:
                        times[job_id].append((time.perf_counter_ns() - started) / 1000)
            mine, other = statistics.median(times[theirs]), statistics.median(times[unknown])
            print(f"  {name:32} {mine:10.1f} {other:11.1f} {mine - other:+8.1f}")
    finally:
        loop.close()
        reader.close()
        db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=200, help="requests per endpoint and kind of id")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--reads", type=int, default=5000, help="in-process samples per read and kind of id")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="tenant-404-") as work:
        time_reads(Path(work), args.reads, rng)
        data_dir = Path(work) / "data"
        data_dir.mkdir()
        alice = keys_cli(data_dir, "create", "alice")
        bob = keys_cli(data_dir, "create", "bob")
        env = {"FILEJOBS_WORKERS": "0", "FILEJOBS_RATE_LIMIT": "0"}
        with Server(data_dir, env=env, args=["--log-level", "warning"]).start() as server:
            with server.client(headers={"Authorization": f"Bearer {alice}"}) as as_alice:
                made = as_alice.post("/v1/jobs", files={"file": ("a.txt", b"hello\n", "text/plain")})
                assert made.status_code == 202, made.text
                theirs = made.json()["id"]
                before = as_alice.get(f"/v1/jobs/{theirs}").json()
            print(f"{'endpoint':28} {'theirs µs':>10} {'unknown µs':>11} {'diff µs':>8}   (medians)")
            with server.client(headers={"Authorization": f"Bearer {bob}"}) as as_bob:
                for run in range(1, args.runs + 1):
                    print(f"run {run}, {args.samples} samples each:")
                    for name, mine, other in measure(as_bob, theirs, args.samples, rng):
                        print(f"  {name:26} {mine:10.0f} {other:11.0f} {mine - other:+8.0f}")
            with server.client(headers={"Authorization": f"Bearer {alice}"}) as as_alice:
                assert as_alice.get(f"/v1/jobs/{theirs}").json() == before, "Bob changed Alice's job"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
