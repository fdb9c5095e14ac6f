"""PostgreSQL's CPU per job for the worker's two writes (claim, finish), per schema variant.

Each variant gets a fresh database on the machine's server, made in one of these ways:

* ``0007``: the ``jobs`` table as migration 0007 left it (13 indexes, the change feed's ``NOTIFY``);
* ``0007-quiet``: the same without the change feed's triggers;
* ``head``: the schema at the newest migration;
* ``head-quiet``: the same without the change feed's triggers;
* ``floor``: bare Celery + status rows' table and statements (:mod:`scripts.bench.apps.bare_celery`:
  a primary key and a status index; the claim with ``synchronous_commit=off``, a durable finish).

Each is filled with ``--rows`` finished jobs first (70 % succeeded with an output, 10 % failed,
5 % cancelled, 15 % queued for later), and ``--listeners`` connections (default 1) ``LISTEN`` on
the change feed's channel and drain it (as each API process does). Then, in every round and
every variant in turn (so a change in the machine's load touches them all alike), ``--jobs``
queued jobs are inserted (not counted), claimed one by one with :func:`repository.claim_job` and finished with
:func:`repository.succeed_alone` (the statements a Celery worker runs, through
:class:`~filejobs.db.Database`). The user + system CPU of every client backend of the variant's
database (``/proc/<pid>/stat``; the listener's too) is read before the claims, between, and after
the finishes. Printed per variant: the median over rounds of the CPU per claim, per finish and per
job, in µs.

    python -m scripts.pg_job_writes --jobs 1000 --rounds 5
    python -m scripts.pg_job_writes --variants 0007,head,floor
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from sqlalchemy import insert

from filejobs.db import Database
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.models import Job, utcnow
from filejobs.settings import Settings
from filejobs.testing import fresh_postgres_database
from filejobs.webhooks.outbox import CHANNEL
from scripts.bench.apps import bare_celery

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
VARIANTS = ("0007", "0007-quiet", "head", "head-quiet", "floor")
OWNER = "pg-job-writes:0"
STATUSES = (("succeeded", 70), ("failed", 10), ("cancelled", 5), ("queued", 15))
TICK = os.sysconf("SC_CLK_TCK")
RESULT = {"size": 1024, "sha256": "0" * 64, "mime_type": "text/plain", "lines": 17}


def backend_cpu(admin: psycopg.Connection[Any], database: str) -> float:
    """User + system CPU seconds of every client backend connected to ``database``."""
    pids = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
        (database,),
    ).fetchall()
    total = 0
    for (pid,) in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / TICK


def job_values(status: str, rng: random.Random) -> dict[str, Any]:
    """A row as the service writes it, in ``status`` (a final one with its output and times)."""
    now = utcnow()
    job_id = new_job_id()
    values: dict[str, Any] = {
        "id": job_id,
        "owner": OWNER,
        "status": status,
        "processor": rng.choice(("inspect", "inspect", "thumbnail", "csv_profile")),
        "params": {},
        "file_name": "f.txt",
        "file_size": 1024,
        "file_sha256": f"{rng.getrandbits(256):064x}",
        "file_content_type": "text/plain",
        "storage_key": f"uploads/{job_id}",
        "max_attempts": 3,
        "created_at": now,
        "updated_at": now,
        "run_after": now - timedelta(seconds=1),
        "version": 1,
        "progress": 0.0,
        "attempts": 0,
        "processor_version": "1",
        "params_digest": "0" * 64,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "output_key": None,
    }
    if status == "queued":
        values["run_after"] = now + timedelta(days=1)
    elif status in ("succeeded", "failed", "cancelled"):
        values.update(finished_at=now, started_at=now, attempts=1, progress=1.0, version=3)
        if status == "succeeded":
            values.update(result=RESULT, output_key=f"outputs/{job_id}/out.txt")
    return values


@dataclass
class Variant:
    """One fresh database and how to run a claim and a finish on it."""

    name: str
    url: str
    database: str
    ids: list[str] = field(default_factory=list)
    db: Database | None = None
    plain: psycopg.Connection[Any] | None = None

    def fill(self, rows: int, rng: random.Random) -> None:
        statuses = [status for status, weight in STATUSES for _ in range(weight)]
        batch = [job_values(rng.choice(statuses), rng) for _ in range(rows)]
        if self.db is not None:
            with self.db.engine.begin() as conn:
                for start in range(0, rows, 5000):
                    conn.execute(insert(Job.__table__), batch[start : start + 5000])  # type: ignore[attr-defined]
        else:
            assert self.plain is not None
            with self.plain.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO bare_tasks (id, status, attempts, finished_at) VALUES (%s, %s, 1, now())",
                    [(row["id"], row["status"]) for row in batch],
                )
        self.analyze()

    def analyze(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

    def add_queued(self, jobs: int, rng: random.Random) -> None:
        rows = [job_values("queued", rng) for _ in range(jobs)]
        for row in rows:
            row["run_after"] = utcnow() - timedelta(seconds=1)
        self.ids = [row["id"] for row in rows]
        if self.db is not None:
            with self.db.engine.begin() as conn:
                conn.execute(insert(Job.__table__), rows)  # type: ignore[attr-defined]
        else:
            assert self.plain is not None
            with self.plain.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO bare_tasks (id, status) VALUES (%s, 'queued')", [(i,) for i in self.ids]
                )

    def claim(self, job_id: str) -> None:
        if self.db is not None:
            claimed = repository.claim_job(self.db, job_id, owner=OWNER, lease_seconds=300)
            assert claimed is not None, job_id
            return
        assert self.plain is not None
        with self.plain.transaction():
            self.plain.execute("SET LOCAL synchronous_commit = off")
            row = self.plain.execute(bare_celery.CLAIM, {"id": job_id, "owner": OWNER}).fetchone()
        assert row is not None, job_id

    def finish(self, job_id: str) -> None:
        if self.db is not None:
            params = repository.succeeded_params(
                job_id,
                owner=OWNER,
                result=RESULT,
                output_key=f"outputs/{job_id}/out.txt",
                output_name="out.txt",
                output_content_type="text/plain",
            )
            assert repository.succeed_alone(self.db, params), job_id
            return
        assert self.plain is not None
        done = self.plain.execute(bare_celery.FINISH, {"id": job_id, "owner": OWNER}).rowcount
        assert done == 1, job_id


def make_variant(stack: ExitStack, name: str) -> Variant:
    plain_url = stack.enter_context(fresh_postgres_database())
    database = plain_url.rsplit("/", 1)[1]
    if name == "floor":
        conn = stack.enter_context(psycopg.connect(plain_url, autocommit=True))
        conn.execute(bare_celery.TABLE)  # type: ignore[arg-type]
        return Variant(name, plain_url, database, plain=conn)
    url = Settings(database_url=plain_url).resolved_database_url
    upgrade(url, "0007" if name.startswith("0007") else "head")
    if name.endswith("-quiet"):
        with psycopg.connect(plain_url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER jobs_notify_update ON jobs")
            conn.execute("DROP TRIGGER jobs_notify_insert_delete ON jobs")
    db = Database(url)
    stack.callback(db.dispose)
    return Variant(name, plain_url, database, db=db)


@contextmanager
def listening(url: str) -> Iterator[None]:
    """A connection that LISTENs on the change feed's channel and drains it, until exit."""
    stop = threading.Event()
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")

    def drain() -> None:
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                pass

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        conn.close()


def timed(admin: psycopg.Connection[Any], variant: Variant, step: Callable[[str], None]) -> float:
    before = backend_cpu(admin, variant.database)
    for job_id in variant.ids:
        step(job_id)
    return backend_cpu(admin, variant.database) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="claims and finishes per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20000, help="finished jobs in the table first")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--listeners", type=int, default=1, help="connections LISTENing per variant")
    args = parser.parse_args()
    names = [name for name in args.variants.split(",") if name]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}")
    rng = random.Random(uuid.uuid4().int)
    with ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(ADMIN_URL, autocommit=True))
        variants = [make_variant(stack, name) for name in names]
        for variant in variants:
            variant.fill(args.rows, rng)
            for _ in range(args.listeners):
                stack.enter_context(listening(variant.url))
            variant.add_queued(50, rng)  # warm up: the pools' connections open, statements prepare
            for job_id in variant.ids:
                variant.claim(job_id)
                variant.finish(job_id)
        figures: dict[str, list[tuple[float, float]]] = {variant.name: [] for variant in variants}
        for _ in range(args.rounds):
            for variant in variants:
                variant.add_queued(args.jobs, rng)
                claims = timed(admin, variant, variant.claim)
                finishes = timed(admin, variant, variant.finish)
                figures[variant.name].append((claims / args.jobs, finishes / args.jobs))
            time.sleep(0.5)  # let the listeners drain before the next round's inserts
        print(
            f"load average {os.getloadavg()}; {args.jobs} jobs x {args.rounds} rounds, {args.rows} rows first"
        )
        print(f"{'variant':<12} {'claim µs':>10} {'finish µs':>10} {'job µs':>10}  (median; rounds' jobs)")
        for name, pairs in figures.items():
            claim = statistics.median(pair[0] for pair in pairs) * 1e6
            finish = statistics.median(pair[1] for pair in pairs) * 1e6
            jobs = ", ".join(f"{(a + b) * 1e6:.0f}" for a, b in pairs)
            print(f"{name:<12} {claim:>10.0f} {finish:>10.0f} {claim + finish:>10.0f}  ({jobs})")


if __name__ == "__main__":
    main()
