"""CPU per job of every process in Celery mode, against bare Celery, with the queue filled first.

Wall-clock jobs/s swings with the machine's load; the CPU each process spends per job moves far
less, and it shows where the floor is: what the worker's processes, PostgreSQL and the broker cost
per job in filejobs and in bare Celery (:mod:`scripts.bench.apps.bare_celery`) on the same broker.

For filejobs: a fresh PostgreSQL database, one ``filejobs serve`` (celery backend) and no worker;
``--jobs`` tiny ``inspect`` jobs are uploaded (their messages wait in the queue), then one
``filejobs worker --concurrency 1 --log-level warning`` starts and drains them. For bare Celery:
``--jobs`` no-op tasks published, then one bare worker drains them; and "bare+rows", bare Celery
whose task claims a row and records it succeeded in PostgreSQL (``bare_celery.status_rows``: the
least a Celery-backed service that tracks status in PostgreSQL does per job). In each, once the
first job is done, the CPU times of the worker's processes (main, pool, the processor child), of
the API process, of the PostgreSQL backends connected to the round's database and of every Redis
and RabbitMQ process are read, and again after the last: the difference over the jobs done in
between, and those jobs per second.

    python -m scripts.celery_cpu_per_job --broker redis --jobs 300
    python -m scripts.celery_cpu_per_job --broker amqp --rounds 2

Needs PostgreSQL, Redis and RabbitMQ on 127.0.0.1 (as ``python -m scripts.bench --only celery``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import psutil
import psycopg
import redis

from filejobs.testing import Worker, fresh_postgres_database
from scripts.bench.apps import bare_celery
from scripts.bench.common import filejobs_server
from scripts.bench.figures.celery import (
    BROKERS,
    delete_queue,
    require_services,
    stop_processes,
    succeeded,
    upload,
)

#: Service processes by what their name or command line holds.
SERVICES = {"postgres": ("postgres",), "redis": ("redis-server",), "rabbitmq": ("beam.smp",)}
POLL = 0.005

CpuTimes = dict[str, float]


class QuietWorker(Worker):
    """``filejobs worker --log-level warning`` (as in the bench); not waited for: it drains at once."""

    def argv(self) -> list[str]:
        return [*super().argv(), "--log-level", "warning"]


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def tree_cpu(pid: int, prefix: str) -> CpuTimes:
    """CPU seconds of ``pid`` (``<prefix> main``), its pool processes and their processor children."""
    out: CpuTimes = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for proc in procs:
        try:
            cmdline = " ".join(proc.cmdline())
            spent = _cpu(proc)
        except psutil.Error:
            continue
        kind = "child" if "filejobs.jobs.child" in cmdline else "main" if proc.pid == pid else "pool"
        out[f"{prefix} {kind}"] = out.get(f"{prefix} {kind}", 0.0) + spent
    return out


def services_cpu(database: str | None = None, poller: int | None = None) -> CpuTimes:
    """CPU seconds of the broker processes and of PostgreSQL: with ``database``, only the backends
    connected to it (the machine's other users of the server left out), else all its processes;
    never the backend ``poller`` (the one counting the jobs done: this script's, not the job's)."""
    out = dict.fromkeys(SERVICES, 0.0)
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.pid == poller:
            continue
        try:
            text = f"{proc.info['name'] or ''} {' '.join(proc.info['cmdline'] or [])[:200]}"
            for service, names in SERVICES.items():
                if any(name in text for name in names):
                    if service == "postgres" and database is not None and f" {database} " not in text:
                        continue
                    out[service] += _cpu(proc)
        except psutil.Error:
            continue
    return out


def measure(done: Callable[[], int], jobs: int, snapshot: Callable[[], CpuTimes]) -> tuple[float, CpuTimes]:
    """From the first job done to the last: (jobs/s, CPU ms per job by process)."""
    while done() < 1:
        time.sleep(POLL)
    first, before, start = done(), snapshot(), time.perf_counter()
    while done() < jobs:
        time.sleep(POLL)
    elapsed, after = time.perf_counter() - start, snapshot()
    count = jobs - first
    return count / elapsed, {k: (after.get(k, 0.0) - v) / count * 1e3 for k, v in before.items()}


def filejobs_round(broker: str, jobs: int, root: Path, pool: str) -> tuple[float, CpuTimes]:
    with fresh_postgres_database() as database_url, ExitStack() as stack:
        queue = f"fj-cpu-{uuid.uuid4().hex[:10]}"
        data_dir = root / queue / "data"
        env = {
            "FILEJOBS_DATABASE_URL": database_url,
            "FILEJOBS_SWEEP_INTERVAL": "10",
            "FILEJOBS_BACKEND": "celery",
            "FILEJOBS_BROKER_URL": BROKERS[broker],
            "FILEJOBS_QUEUE": queue,
            "FILEJOBS_WORKERS": "0",
        }
        stack.callback(delete_queue, broker, queue)
        server = stack.enter_context(filejobs_server(data_dir, env))
        upload(server.base_url, jobs, 4)
        worker = QuietWorker(data_dir, env=env, concurrency=1, pool=pool, name="worker")
        stack.callback(worker.stop)
        worker.spawn()
        conn = stack.enter_context(psycopg.connect(database_url, autocommit=True))

        database = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]

        def snapshot() -> CpuTimes:
            return {
                **tree_cpu(worker.pid, "worker"),
                **tree_cpu(server.pid, "api"),
                **services_cpu(str(database), conn.info.backend_pid),
            }

        return measure(lambda: succeeded(conn), jobs, snapshot)


def bare_round(broker: str, jobs: int, pool: str, *, rows: bool = False) -> tuple[float, CpuTimes]:
    """Bare Celery's no-op tasks, or with ``rows`` its claim-and-finish tasks on PostgreSQL."""
    with ExitStack() as stack:
        queue = f"fj-bare-{uuid.uuid4().hex[:10]}"
        app = bare_celery.make_app(BROKERS[broker], queue)
        stack.callback(delete_queue, broker, queue)
        stack.callback(app.close)
        env = {
            **os.environ,
            "BARE_CELERY_BROKER": BROKERS[broker],
            "BARE_CELERY_QUEUE": queue,
            "BARE_CELERY_POOL": pool,
        }
        database: str | None = None
        poller: int | None = None
        if rows:
            database_url = stack.enter_context(fresh_postgres_database())
            env["BARE_CELERY_DATABASE"] = database_url
            database = str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
            ids = [uuid.uuid4().hex for _ in range(jobs)]
            bare_celery.create_rows(database_url, ids)
            bare_celery.publish_rows(app, ids)
            conn = stack.enter_context(psycopg.connect(database_url, autocommit=True))
            done = partial(bare_celery.succeeded_rows, conn)
            poller = conn.info.backend_pid
        else:
            counter = f"{queue}-done"
            counts = redis.Redis.from_url(bare_celery.COUNTER_REDIS)
            stack.callback(counts.close)
            stack.callback(counts.delete, counter)
            bare_celery.publish(app, counter, jobs)

            def done() -> int:
                return int(counts.get(counter) or 0)

        argv = [sys.executable, "-m", "scripts.bench.apps.bare_celery", f"bare-{queue}@cpu"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        stack.callback(stop_processes, [proc])

        def snapshot() -> CpuTimes:
            return {**tree_cpu(proc.pid, "worker"), **services_cpu(database, poller)}

        return measure(done, jobs, snapshot)


def show(label: str, rate: float, cpu: CpuTimes) -> None:
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(cpu.items()) if ms >= 0.005)
    total = sum(cpu.values())
    print(f"{label:9} {rate:7.1f} jobs/s; CPU ms/job {total:5.2f}: {parts} (load {os.getloadavg()[0]:.1f})")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pool", choices=("prefork", "threads", "solo"), default="prefork")
    args = parser.parse_args()
    require_services()
    with tempfile.TemporaryDirectory(prefix="filejobs-cpu-", dir="/var/tmp") as root:
        for _ in range(args.rounds):
            show("filejobs", *filejobs_round(args.broker, args.jobs, Path(root), args.pool))
            show("bare", *bare_round(args.broker, args.jobs, args.pool))
            show("bare+rows", *bare_round(args.broker, args.jobs, args.pool, rows=True))


if __name__ == "__main__":
    main()
