"""PostgreSQL's CPU per job for the worker's two writes (claim, finish), per schema variant.

Each variant gets a fresh database on the machine's server, made in one of these ways:

* ``0007``: the ``jobs`` table as migration 0007 left it (13 indexes, the change feed's ``NOTIFY``);
* ``0007-quiet``: the same without the change feed's triggers;
* ``head``: the schema at the newest migration;
* ``head-quiet``: the same without the change feed's triggers;
* ``floor``: bare Celery + status rows' table and statements (:mod:`scripts.bench.apps.bare_celery`:
  a primary key and a status index; the claim in autocommit on a connection with
  ``synchronous_commit=off``, a durable finish in autocommit, as its task runs them).

Each is filled with ``--rows`` finished jobs first (70 % succeeded with an output, 10 % failed,
5 % cancelled, 15 % queued for later), and ``--listeners`` connections (default 1) ``LISTEN`` on
the change feed's channel and drain it (as each API process with an event stream open does; where
the schema has ``change_listeners``, migration 0009, each records itself there, without which the
trigger sends nothing: ``--listeners 0`` is an API with no stream open). Then, in every round and
every variant in turn (so a change in the machine's load touches them all alike), ``--jobs``
queued jobs are inserted (not counted), claimed one by one with :func:`repository.claim_job` and finished with
:func:`repository.succeed_alone` (the statements a Celery worker runs, through
:class:`~filejobs.db.Database`). The user + system CPU of every client backend of the variant's
database (``/proc/<pid>/stat``; the listener's too) is read before the claims, between, and after
the finishes, and the WAL written meanwhile for the variant's relations is read with
``pg_walinspect`` (B-tree records: one per index entry; bytes). Printed per variant: the median
over rounds of the CPU per claim, per finish and per job in µs, the index entries per claim and
per finish, the WAL bytes per job (without full-page images: a checkpoint adds them to any variant),
and the client's side: this process's thread CPU per claim and per finish (``time.thread_time``:
``Database.write_one`` against the floor's bare psycopg statements).

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
from filejobs.events.feed import CHANNEL
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.models import Job, utcnow
from filejobs.settings import Settings
from filejobs.testing import fresh_postgres_database
from scripts.bench.apps import bare_celery

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
VARIANTS = ("0007", "0007-quiet", "head", "head-quiet", "floor")
OWNER = "pg-job-writes:0"
STATUSES = (("succeeded", 70), ("failed", 10), ("cancelled", 5), ("queued", 15))
TICK = os.sysconf("SC_CLK_TCK")
RESULT = {"size": 1024, "sha256": "0" * 64, "mime_type": "text/plain", "lines": 17}


def backend_cpu(admin: psycopg.Connection[Any], database: str, but: int) -> float:
    """User + system CPU seconds of every client backend connected to ``database`` but ``but``."""
    pids = admin.execute(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = %s AND backend_type = 'client backend' AND pid <> %s",
        (database, but),
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
    #: The floor's claims: ``synchronous_commit=off`` for the connection, as bare Celery + status rows.
    relaxed: psycopg.Connection[Any] | None = None
    wal: psycopg.Connection[Any] | None = None

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
        assert self.relaxed is not None
        row = self.relaxed.execute(bare_celery.CLAIM, {"id": job_id, "owner": OWNER}).fetchone()
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
    variant = _make_variant(stack, name)
    variant.wal = stack.enter_context(psycopg.connect(variant.url, autocommit=True))
    variant.wal.execute("CREATE EXTENSION pg_walinspect")
    return variant


def _make_variant(stack: ExitStack, name: str) -> Variant:
    plain_url = stack.enter_context(fresh_postgres_database())
    database = plain_url.rsplit("/", 1)[1]
    if name == "floor":
        conn = stack.enter_context(psycopg.connect(plain_url, autocommit=True))
        conn.execute(bare_celery.TABLE)  # type: ignore[arg-type]
        relaxed = stack.enter_context(
            psycopg.connect(plain_url, autocommit=True, options="-c synchronous_commit=off")
        )
        return Variant(name, plain_url, database, plain=conn, relaxed=relaxed)
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
    """A connection that LISTENs on the change feed's channel and drains it, until exit; recorded
    as a listener where the schema has ``change_listeners`` (as the feed records itself)."""
    stop = threading.Event()
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    found = conn.execute("SELECT to_regclass('change_listeners') IS NOT NULL").fetchone()
    if found and found[0]:
        conn.execute(
            "INSERT INTO change_listeners (id, expires_at) VALUES (%s, now() + interval '1 day')",
            (f"pg_job_writes:{uuid.uuid4().hex}",),
        )

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


@dataclass
class Sample:
    """What one step cost over a round's jobs."""

    cpu: float  # seconds, every client backend of the variant's database but the WAL reader's
    client: float  # seconds of this process's thread: the client's side of the statements
    index_records: int | None  # B-tree WAL records (an index entry each) of the variant's database
    wal_bytes: int | None  # WAL bytes of the variant's database's relations, without full-page images


#: The WAL records between two positions that touch the variant's relations (``/<database oid>/``).
WAL_RECORDS = """
SELECT count(*) FILTER (WHERE resource_manager = 'Btree'), coalesce(sum(record_length - fpi_length), 0)
FROM pg_get_wal_records_info(%s, %s) WHERE block_ref LIKE %s
"""


def timed(admin: psycopg.Connection[Any], variant: Variant, step: Callable[[str], None]) -> Sample:
    """Run ``step`` for every job of the round: its backends' CPU and its WAL (pg_walinspect)."""
    wal = variant.wal
    assert wal is not None
    reader = wal.info.backend_pid
    start = wal.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
    before = backend_cpu(admin, variant.database, reader)
    client = time.thread_time()
    for job_id in variant.ids:
        step(job_id)
    client = time.thread_time() - client
    cpu = backend_cpu(admin, variant.database, reader) - before
    end = wal.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
    assert start is not None
    assert end is not None
    while wal.execute("SELECT pg_current_wal_flush_lsn() < %s", (end[0],)).fetchone() != (False,):
        time.sleep(0.05)  # pg_walinspect reads only flushed WAL (the claims commit asynchronously)
    oid = wal.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    assert oid is not None
    try:
        row = wal.execute(WAL_RECORDS, (start[0], end[0], f"%/{oid[0]}/%")).fetchone()
    except psycopg.errors.UndefinedFile:  # a checkpoint recycled the segment meanwhile: no WAL figure
        return Sample(cpu, client, None, None)
    assert row is not None
    return Sample(cpu, client, int(row[0]), int(row[1]))


def _median_per_job(counts: list[int | None], jobs: int, digits: int = 1) -> str:
    """The median of the rounds' counts per job ("-" when every round lost its WAL to a checkpoint)."""
    known = [count for count in counts if count is not None]
    return f"{statistics.median(known) / jobs:.{digits}f}" if known else "-"


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
        figures: dict[str, list[tuple[Sample, Sample]]] = {variant.name: [] for variant in variants}
        for _ in range(args.rounds):
            for variant in variants:
                variant.add_queued(args.jobs, rng)
                claims = timed(admin, variant, variant.claim)
                finishes = timed(admin, variant, variant.finish)
                figures[variant.name].append((claims, finishes))
            time.sleep(0.5)  # let the listeners drain before the next round's inserts
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        print(
            f"load average {load}; {args.jobs} jobs x {args.rounds} rounds, {args.rows} rows first, "
            f"{args.listeners} listener(s)"
        )
        print(
            f"{'variant':<12} {'claim µs':>9} {'finish µs':>9} {'job µs':>7} {'index entries':>14} "
            f"{'WAL B':>6} {'client µs':>13}  (median; rounds' µs per job)"
        )
        jobs = args.jobs
        for name, pairs in figures.items():
            claim = statistics.median(pair[0].cpu for pair in pairs) / jobs * 1e6
            finish = statistics.median(pair[1].cpu for pair in pairs) / jobs * 1e6
            entries = "+".join(
                _median_per_job([pair[step].index_records for pair in pairs], jobs) for step in (0, 1)
            )
            wal = _median_per_job(
                [
                    None if a.wal_bytes is None or b.wal_bytes is None else a.wal_bytes + b.wal_bytes
                    for a, b in pairs
                ],
                jobs,
                digits=0,
            )
            each = ", ".join(f"{(a.cpu + b.cpu) / jobs * 1e6:.0f}" for a, b in pairs)
            client = "+".join(
                f"{statistics.median(pair[step].client for pair in pairs) / jobs * 1e6:.0f}"
                for step in (0, 1)
            )
            figure = (
                f"{claim:>9.0f} {finish:>9.0f} {claim + finish:>7.0f} {entries:>14} {wal:>6} {client:>13}"
            )
            print(f"{name:<12} {figure}  ({each})")


if __name__ == "__main__":
    main()
