"""The ORM-free read of one job (the status poll's hot path) returns exactly what the ORM does."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.fast_read import JobReader
from filejobs.migrate import upgrade
from filejobs.models import Job, utcnow
from tests.jobs.helpers import make_job
from tests.services import fresh_postgres_database


def full_job(owner: str = "") -> Job:
    """A row with every kind of column filled: JSON, nullable datetimes, text, numbers."""
    now = utcnow()
    return make_job(
        owner=owner,
        status="succeeded",
        params={"size": 64, "nested": {"a": [1, 2, None]}, "text": "é"},
        result={"ok": True, "rows": 3, "values": [1.5, "x"]},
        progress=1.0,
        message="done",
        attempts=2,
        error_code=None,
        started_at=now - timedelta(seconds=3),
        finished_at=now,
        lease_owner=None,
        declared_content_type="text/csv",
    )


def check_same(db: Database) -> None:
    reader = JobReader(db)
    try:
        for owner in ("", "key-1"):
            job = repository.insert_job(db, full_job(owner))
            orm = repository.get_job(db, job.id)
            assert orm is not None
            fast = reader.get(job.id)
            assert fast is not None
            assert fast.model_dump() == orm.model_dump()
            assert reader.get(job.id, owner=owner) is not None
            assert reader.get(job.id, owner="someone-else") is None  # another tenant's: unknown
            on_loop = asyncio.run(reader.aget(job.id, owner=owner))
            assert on_loop is not None
            assert on_loop.model_dump() == orm.model_dump()
        assert reader.get("0" * 26) is None
        assert reader.get("../../etc/passwd") is None
        assert asyncio.run(reader.aget("not-an-id")) is None
    finally:
        reader.close()


def test_sqlite_matches_the_orm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    db = Database(url)
    try:
        check_same(db)
    finally:
        db.dispose()


@pytest.fixture
def postgres_db() -> Iterator[Database]:
    with fresh_postgres_database() as url:
        upgrade(url)
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()


def test_postgres_matches_the_orm(postgres_db: Database) -> None:
    check_same(postgres_db)


def test_sqlite_loop_read_falls_back_to_a_thread_when_the_database_is_locked(tmp_path: Path) -> None:
    """An exclusive lock (as a checkpoint or recovery would take) makes the loop's connection give
    up after a few ms; the read then waits in a worker thread instead of stalling the event loop."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    db = Database(url)
    reader = JobReader(db)
    try:
        job = repository.insert_job(db, full_job())
        db.engine.dispose()  # no other connection open: the exclusive lock can be taken
        blocker = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
        blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
        blocker.execute("BEGIN EXCLUSIVE")

        async def read_while_locked() -> Job | None:
            task = asyncio.ensure_future(reader.aget(job.id))
            await asyncio.sleep(0.2)  # the loop is free meanwhile: this sleep ends on time
            assert not task.done()  # still waiting, in a thread
            blocker.close()  # lets go of the lock
            return await asyncio.wait_for(task, timeout=30)

        found = asyncio.run(read_while_locked())
        assert found is not None
        assert found.id == job.id
    finally:
        reader.close()
        db.dispose()
