#!/usr/bin/env python
"""Trivial jobs per second on the Celery backend, with 1 and 2 workers, on Redis and on RabbitMQ.

For each configuration, in one run: a fresh PostgreSQL database, a fresh queue, one real
``filejobs serve`` (celery backend) and N real ``filejobs worker --concurrency 1`` processes. Once
the workers are ready, ``--jobs`` tiny ``inspect`` jobs are submitted by ``--uploaders`` threads
as fast as the API takes them; the clock runs from the first submit to the last job reaching
``succeeded`` (read from the database). The local backend (``FILEJOBS_WORKERS=N`` in the API
process, same database) runs in the same invocation as the baseline, so the ratios hold on a noisy
machine.

Reported per configuration: accept rate (202s per second while submitting), end-to-end jobs/s,
and the ratio of jobs/s to the local backend with the same number of workers.

    python scripts/bench_celery.py --jobs 300 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.server import Server  # noqa: E402
from tests.e2e.worker import Worker  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
}


@dataclass
class Result:
    backend: str
    workers: int
    accept_per_s: float
    jobs_per_s: float


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"filejobs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_queue(broker: str, url: str, queue: str) -> None:
    from kombu import Connection

    with Connection(url) as conn:
        try:
            conn.default_channel.queue_delete(queue)
        except Exception as exc:  # a queue nobody declared: nothing to delete
            print(f"  (queue {queue} on {broker}: {exc!r})", file=sys.stderr)
    if broker == "redis":  # kombu keeps the queue's bindings in keys of their own
        import redis

        redis.Redis.from_url(url).delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def succeeded(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    counts = {status: int(n) for status, n in rows}
    bad = counts.get("failed", 0) + counts.get("cancelled", 0)
    if bad:
        raise RuntimeError(f"{bad} job(s) did not succeed")
    return counts.get("succeeded", 0)


def drive(base_url: str, database_url: str, jobs: int, uploaders: int) -> tuple[float, float]:
    """Submit ``jobs`` tiny jobs from ``uploaders`` threads; (accept/s, end-to-end jobs/s)."""
    errors: list[str] = []
    per_thread = [jobs // uploaders + (1 if i < jobs % uploaders else 0) for i in range(uploaders)]

    def upload(count: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for index in range(count):
                response = client.post(
                    "/v1/jobs",
                    files={"file": (f"f{index}.txt", b"hello world\n", "text/plain")},
                    data={"processor": "inspect"},
                )
                if response.status_code != 202:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    return

    threads = [threading.Thread(target=upload, args=(n,)) for n in per_thread]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted_at = time.perf_counter()
    if errors:
        raise RuntimeError(f"submits failed: {errors[:3]}")
    deadline = time.monotonic() + 600
    while succeeded(database_url) < jobs:
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish within 10 minutes")
        time.sleep(0.02)
    done_at = time.perf_counter()
    return jobs / (accepted_at - start), jobs / (done_at - start)


def run_config(backend: str, workers: int, args: argparse.Namespace, root: Path) -> Result:
    with fresh_database() as database_url, ExitStack() as stack:
        queue = f"fj-bench-{uuid.uuid4().hex[:10]}"
        data_dir = root / f"{backend}-{workers}-{queue}" / "data"
        env = {"FILEJOBS_DATABASE_URL": database_url, "FILEJOBS_SWEEP_INTERVAL": "10"}
        if backend == "local":
            env["FILEJOBS_WORKERS"] = str(workers)
        else:
            env.update(
                {
                    "FILEJOBS_BACKEND": "celery",
                    "FILEJOBS_BROKER_URL": BROKERS[backend],
                    "FILEJOBS_QUEUE": queue,
                    "FILEJOBS_WORKERS": "0",
                }
            )
            stack.callback(delete_queue, backend, BROKERS[backend], queue)
        server = stack.enter_context(Server(data_dir, env=env))
        for index in range(workers if backend != "local" else 0):
            worker = Worker(data_dir, env=env, concurrency=1, name=f"worker{index}")
            stack.callback(worker.stop)
            worker.start()
        accept, jobs_per_s = drive(server.base_url, database_url, args.jobs, args.uploaders)
        return Result(backend, workers, accept, jobs_per_s)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300, help="jobs per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--uploaders", type=int, default=4, help="concurrent submitting threads")
    parser.add_argument("--brokers", default="redis,amqp", help="comma-separated: redis, amqp")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args()
    brokers = [b for b in args.brokers.split(",") if b]
    counts = [int(n) for n in args.workers.split(",") if n]

    results: dict[tuple[str, int], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="filejobs-bench-celery-") as tmp:
        for round_no in range(1, args.rounds + 1):
            for workers in counts:
                for backend in ["local", *brokers]:  # alternate, so each ratio shares conditions
                    result = run_config(backend, workers, args, Path(tmp))
                    results.setdefault((backend, workers), []).append(result)
                    print(
                        f"round {round_no}: {backend:5} with {workers} worker(s): "
                        f"accept {result.accept_per_s:7.1f}/s, jobs {result.jobs_per_s:7.1f}/s",
                        flush=True,
                    )

    print()
    print(f"{args.jobs} trivial inspect jobs, {args.uploaders} uploaders, medians of {args.rounds} round(s)")
    print(f"{'backend':8} {'workers':>7} {'accept/s':>9} {'jobs/s':>8} {'vs local':>8}")
    for workers in counts:
        local = statistics.median(r.jobs_per_s for r in results[("local", workers)])
        for backend in ["local", *brokers]:
            rows = results[(backend, workers)]
            accept = statistics.median(r.accept_per_s for r in rows)
            jobs = statistics.median(r.jobs_per_s for r in rows)
            print(f"{backend:8} {workers:>7} {accept:>9.1f} {jobs:>8.1f} {jobs / local:>8.2f}")


if __name__ == "__main__":
    main()
