"""``Database.write_one`` on PostgreSQL runs its statement on a psycopg connection kept in autocommit
for such statements (:mod:`filejobs.pg_statement`): the rows it returns are what SQLAlchemy's
``Connection.execute`` returns for the same statement (the column types' processors applied: UTC
datetimes, JSON), it commits by itself, the engine's pool is left as the ORM expects it (its
connections not in autocommit, none of them taken), a failed statement raises SQLAlchemy's wrapped
error and its connection stays usable, one connection serves one thread's statements in turn (as
many as threads run them at once), a forked process opens its own, and ``dispose`` closes them."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.models import JobStatus, utcnow
from filejobs.testing import make_job
from tests.services import migrated_database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with migrated_database("postgresql", tmp_path) as database:
        yield database


#: The claim returning the whole row (the worker's returns a few columns): every column type's processor.
FULL_CLAIM = repository._CLAIM_UPDATE.returning(*repository._T.c)


def claim_params(job_id: str) -> dict[str, object]:
    now = utcnow()
    lease = now + timedelta(seconds=30)
    return {"b_job_id": job_id, "b_now": now, "b_owner": "w", "b_lease_expires_at": lease}


@pytest.mark.parametrize("durable", [True, False])
def test_the_claims_row_is_what_sqlalchemy_returns(db: Database, durable: bool) -> None:
    job = repository.insert_job(db, make_job(params={"n": 1, "s": "x"}))
    params = claim_params(job.id)
    fast = db.write_one(FULL_CLAIM, params, durable=durable)
    assert len(fast) == 1
    # The same statement through SQLAlchemy (a second claim finds it running: so compare by reading it).
    with db.engine.connect() as conn:
        read = conn.execute(repository._T.select().where(repository._T.c.id == job.id)).mappings().one()
    assert fast[0] == dict(read)
    assert set(fast[0]) == set(read)
    assert fast[0]["status"] == JobStatus.running.value
    assert fast[0]["params"] == {"n": 1, "s": "x"}
    assert fast[0]["started_at"].tzinfo is UTC
    assert fast[0]["started_at"] == params["b_now"]
    # Committed by itself: a new connection sees it.
    assert repository.get_job(db, job.id).status == JobStatus.running.value  # type: ignore[union-attr]
    # Not ours twice: no row.
    assert db.write_one(FULL_CLAIM, claim_params(job.id), durable=durable) == []


def test_the_connection_goes_back_to_the_pool_in_transactions(db: Database) -> None:
    job = repository.insert_job(db, make_job())
    db.write_one(text("SELECT 1 AS one"), {})
    with db.engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]

    # A transaction that rolls back leaves nothing behind (it was one, not autocommit).
    def change_then_fail() -> None:
        with db.write() as session:
            session.execute(text("UPDATE jobs SET attempts = 41 WHERE id = :id"), {"id": job.id})
            raise RuntimeError

    with pytest.raises(RuntimeError):
        change_then_fail()
    assert repository.get_job(db, job.id).attempts == 0  # type: ignore[union-attr]


def test_a_text_statement_returns_the_drivers_names(db: Database) -> None:
    assert db.write_one(text("SELECT :a AS one, 2 AS two"), {"a": 1}) == [{"one": 1, "two": 2}]
    assert db.write_one(text("SELECT 1 WHERE false"), {}) == []


def test_a_failed_statement_raises_sqlalchemys_error_and_the_pool_stays_usable(db: Database) -> None:
    job = repository.insert_job(db, make_job())
    duplicate = text("INSERT INTO jobs SELECT * FROM jobs WHERE id = :id")
    for _ in range(3):  # more often than the pool has connections in use: each went back usable
        with pytest.raises(IntegrityError):
            db.write_one(duplicate, {"id": job.id})
    assert repository.claim_job(db, job.id, owner="w", lease_seconds=30) is not None
    with db.engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]


def backend_pid(db: Database, durable: bool = True) -> int:
    """The server process of the connection ``write_one`` runs on."""
    return int(db.write_one(text("SELECT pg_backend_pid() AS pid"), {}, durable=durable)[0]["pid"])


def backends(db: Database) -> set[int]:
    """The server processes connected to ``db``'s database (but the asking one)."""
    with db.engine.connect() as conn:
        query = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        rows = conn.execute(text(query))
        return {int(pid) for (pid,) in rows}


@pytest.mark.parametrize("durable", [True, False])
def test_one_thread_s_statements_share_one_connection_apart_from_the_engine_s_pool(
    db: Database, durable: bool
) -> None:
    first = backend_pid(db, durable)
    assert {backend_pid(db, durable) for _ in range(5)} == {first}
    job = repository.insert_job(db, make_job())
    assert repository.claim_job(db, job.id, owner="w", lease_seconds=30) is not None
    assert backend_pid(db, durable) == first
    # Not one of the engine's: its pool has nothing checked out, and hands out other connections.
    pool = (db.engine if durable else db._relaxed_engine).pool
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    # The relaxed one commits without waiting for the WAL's flush; the durable one waits.
    setting = db.write_one(text("SELECT current_setting('synchronous_commit') AS s"), {}, durable=durable)
    assert setting == [{"s": "on" if durable else "off"}]


def test_a_failed_statement_keeps_its_connection(db: Database) -> None:
    job = repository.insert_job(db, make_job())
    first = backend_pid(db)
    with pytest.raises(IntegrityError):
        db.write_one(text("INSERT INTO jobs SELECT * FROM jobs WHERE id = :id"), {"id": job.id})
    assert backend_pid(db) == first  # not closed: autocommit left no transaction to roll back


def test_threads_at_once_get_a_connection_each_and_no_more(db: Database) -> None:
    start = threading.Barrier(4)

    def at_once() -> None:
        start.wait(timeout=10)
        db.write_one(text("SELECT pg_sleep(0.3)"), {})  # all four in the server at the same time

    threads = [threading.Thread(target=at_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(db._autocommit[True]._idle) == 4
    # Then one statement at a time: the last one kept is reused each time, nothing is opened.
    assert len({backend_pid(db) for _ in range(10)}) == 1
    assert len(db._autocommit[True]._idle) == 4


def _child_writes(db: Database, out: multiprocessing.queues.SimpleQueue[int]) -> None:  # type: ignore[name-defined]
    out.put(backend_pid(db))


def test_a_forked_process_opens_its_own_and_leaves_the_parent_s_alone(db: Database) -> None:
    parent = backend_pid(db)
    fork = multiprocessing.get_context("fork")
    out = fork.SimpleQueue()
    child = fork.Process(target=_child_writes, args=(db, out))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert out.get() != parent
    assert backend_pid(db) == parent  # the child did not use, nor close, the parent's connection


def test_dispose_closes_them(db: Database) -> None:
    durable, relaxed = backend_pid(db, True), backend_pid(db, False)
    assert {durable, relaxed} <= backends(db)
    db.dispose()
    probe = Database(db.url)
    try:
        deadline = time.monotonic() + 10
        while {durable, relaxed} & backends(probe):  # a backend leaves a moment after its client
            assert time.monotonic() < deadline, "the kept connections are still open"
            time.sleep(0.01)
    finally:
        probe.dispose()
