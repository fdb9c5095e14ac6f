"""The ``jobs`` table's hot queries use their index, on PostgreSQL and SQLite: a plan check.

Each case runs the real function, records the statements it sends (SQLAlchemy's cursor events),
and asks the database for the plan of each one with the parameters it was sent. On PostgreSQL
the statement is prepared (``PREPARE``, its parameters as ``$n``) and explained with
``plan_cache_mode = force_generic_plan``: the plan PostgreSQL may settle on once psycopg has
prepared a statement (after its fifth execution), where a bound parameter cannot prove a partial
index's predicate; ``enable_seqscan`` is off, so that with these few rows a plan without the
index shows up as one on another index, or a sequential scan. On SQLite, ``EXPLAIN QUERY PLAN``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from psycopg import sql
from sqlalchemy import event, insert, text

from filejobs.db import Database
from filejobs.events import rows
from filejobs.ids import new_job_id
from filejobs.jobs import files, repository
from filejobs.models import Job, JobStatus, utcnow
from tests.services import migrated_database

OWNER = "plans:0"
ROWS = 3000
#: The primary key's index, as each database names it.
PRIMARY_KEY = "pk_jobs|sqlite_autoindex_jobs_1"


def _values(status: str, rng: random.Random) -> dict[str, Any]:
    now = utcnow()
    job_id = new_job_id()
    final = status in ("succeeded", "failed", "cancelled")
    return {
        "id": job_id,
        "owner": OWNER if rng.random() < 0.1 else f"plans:{rng.randrange(1, 50)}",
        "status": status,
        "processor": rng.choice(("inspect", "thumbnail", "csv_profile")),
        "params": {},
        "file_name": "f.txt",
        "file_size": 3,
        "file_sha256": f"{rng.getrandbits(256):064x}",
        "file_content_type": "text/plain",
        "storage_key": f"uploads/{job_id}",
        "output_key": f"outputs/{job_id}/out.txt" if status == "succeeded" else None,
        "max_attempts": 3,
        "created_at": now,
        "updated_at": now - timedelta(hours=1),
        "run_after": now - timedelta(seconds=rng.randrange(1, 100)),
        "lease_expires_at": now + timedelta(minutes=5) if status == "running" else None,
        "finished_at": now - timedelta(days=rng.randrange(0, 10)) if final else None,
        "processor_version": "1",
        "params_digest": "0" * 64,
    }


@pytest.fixture(params=["postgresql", "sqlite"], scope="module")
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A migrated database holding :data:`ROWS` jobs of every status (mostly finished)."""
    rng = random.Random(20)
    weights = (("succeeded", 70), ("failed", 8), ("cancelled", 4), ("queued", 12), ("running", 6))
    statuses = [status for status, weight in weights for _ in range(weight)]
    with migrated_database(request.param, tmp_path_factory.mktemp("plans")) as database:
        with database.engine.begin() as conn:
            conn.execute(insert(Job.__table__), [_values(rng.choice(statuses), rng) for _ in range(ROWS)])  # type: ignore[attr-defined]
            conn.execute(text("ANALYZE"))
        yield database


@contextmanager
def recorded(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The (SQL, parameters) of every statement the engine sends meanwhile."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def plan(db: Database, statement: str, parameters: Any) -> str:
    """The plan the database would run ``statement`` with (generic, on PostgreSQL)."""
    with db.engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        if db.is_sqlite:
            found = raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            return "\n".join(str(row[-1]) for row in found)
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        prepared = re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%")
        values = sql.SQL(", ").join(sql.Literal(parameters[name]) for name in names)
        with raw.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute(sql.SQL("PREPARE plan_check AS {}").format(sql.SQL(prepared)))  # type: ignore[arg-type]
            try:
                execute = (
                    sql.SQL("EXPLAIN EXECUTE plan_check({})").format(values)
                    if names
                    else "EXPLAIN EXECUTE plan_check"
                )
                found = cursor.execute(execute).fetchall()  # type: ignore[arg-type]
            finally:
                cursor.execute("DEALLOCATE plan_check")
                cursor.execute("RESET ALL")
        raw.commit()
        return "\n".join(row[0] for row in found)


def uses(index: str, *, condition: bool = True) -> str:
    """A pattern of the plan of a statement that reads ``index`` (a regex alternative too), by a
    condition on its columns unless ``condition`` is false (the partial index's predicate alone)."""
    if not condition:
        return rf"(using|on|INDEX) ({index})\b"
    return rf"((using|on) ({index})\b[^\n]*\n\s+Index Cond|SEARCH jobs USING (COVERING )?INDEX ({index})\b)"


QUEUED = uses("ix_jobs_queued_run_after")


def _queued_and_due(db: Database) -> None:
    repository.due_job_ids(db)
    repository.undispatched_job_ids(db, stale_before=utcnow())
    repository.queue_stats(db)
    repository.count_queued(db)


def _references(db: Database) -> None:
    job_id = new_job_id()
    files.unreferenced(db, [job_id])  # the job's row, its outputs' references, its upload's


#: (what, the function, the index each of its statements must use, in order).
CASES: list[tuple[str, Callable[[Database], object], list[str]]] = [
    (
        "due and undispatched jobs",
        _queued_and_due,
        [QUEUED, QUEUED, QUEUED, QUEUED, uses("ix_jobs_queued_run_after", condition=False)],
    ),
    (
        "leases",
        lambda db: repository.expire_leases(db),
        [uses("ix_jobs_running_lease_expires_at", condition=False)],
    ),
    (
        "retention",
        lambda db: repository.expired_jobs(db, cutoff=utcnow() - timedelta(days=8)),
        [uses("ix_jobs_finished_at")],
    ),
    ("listing", lambda db: repository.list_jobs(db, owner=OWNER), [uses("ix_jobs_owner_id")]),
    (
        "listing by status",
        lambda db: repository.list_jobs(db, owner=OWNER, status=JobStatus.failed),
        [uses("ix_jobs_owner_status_id")],
    ),
    (
        "listing by processor",
        lambda db: repository.list_jobs(db, owner=OWNER, processor="thumbnail"),
        [uses("ix_jobs_owner_processor_id")],
    ),
    (
        "unfinished of an owner",
        lambda db: repository.count_unfinished(db, OWNER),
        [uses("ix_jobs_owner_status_id")],
    ),
    (
        "change feed",
        lambda db: rows.versions_changed_since(db, utcnow() - timedelta(minutes=1)),
        [uses("ix_jobs_updated_at")],
    ),
    (
        "an owner's change feed",
        lambda db: rows.owner_changed_since(db, OWNER, utcnow() - timedelta(minutes=1), 100),
        [uses("ix_jobs_updated_at")],
    ),
    (
        "file references",
        _references,
        [uses(PRIMARY_KEY), uses("ix_jobs_output_key"), uses("ix_jobs_storage_key")],
    ),
]


@pytest.mark.parametrize(
    ("function", "indexes"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_the_query_uses_its_index(
    db: Database, function: Callable[[Database], object], indexes: list[str]
) -> None:
    with recorded(db) as sent:
        function(db)
    selects = [
        (statement, parameters) for statement, parameters in sent if statement.lstrip().startswith("SELECT")
    ]
    assert len(selects) == len(indexes), selects
    for (statement, parameters), index in zip(selects, indexes, strict=True):
        shown = plan(db, statement, parameters)
        assert re.search(index, shown), f"{statement}\n{shown}"


def test_the_reuse_lookup_uses_its_index(db: Database) -> None:
    """Result reuse's match (in the new job's transaction) reads only succeeded jobs' index."""
    values = _values("queued", random.Random(1))
    with db.write() as session:  # the owner's content, stored: a job by hash looks for a result to reuse
        files.link(session, dict(values), stored=True, reuse=False, now=utcnow())
    with recorded(db) as sent, db.write() as session:
        files.link(session, values, stored=False, reuse=True, now=utcnow())
        session.rollback()
    (statement, parameters), *_ = [pair for pair in sent if "params_digest" in pair[0]]
    assert re.search(uses("ix_jobs_reuse"), plan(db, statement, parameters))


def test_a_plan_check_can_fail(db: Database) -> None:
    """The check tells a statement that cannot use the partial index: the status as a parameter."""
    with recorded(db) as sent, db.read() as session:
        session.exec(  # type: ignore[call-overload]
            text("SELECT id FROM jobs WHERE status = :status AND run_after <= :now ORDER BY run_after"),
            params={"status": "queued", "now": utcnow()},
        )
    (statement, parameters), *_ = sent
    assert not re.search(uses("ix_jobs_queued_run_after", condition=False), plan(db, statement, parameters))
