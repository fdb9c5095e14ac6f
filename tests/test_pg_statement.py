"""``Database.write_one`` on PostgreSQL runs its statement on the pooled psycopg connection
(:mod:`filejobs.pg_statement`): the rows it returns are what SQLAlchemy's ``Connection.execute``
returns for the same statement (the column types' processors applied: UTC datetimes, JSON), it
commits by itself, the connection goes back to the pool as the ORM expects it (not in autocommit),
and a failed statement raises SQLAlchemy's wrapped error and leaves the pool usable."""

from __future__ import annotations

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
