"""The two read queries behind the database gauges, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.models import JobStatus, utcnow
from tests.jobs.helpers import make_job
from tests.services import migrated_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


def test_empty_table(db: Database) -> None:
    assert repository.count_jobs(db) == []
    assert repository.queue_stats(db) == (0, None)


def test_counts_by_status_and_processor_and_due_queue(db: Database) -> None:
    now = utcnow()
    oldest_due = now - timedelta(minutes=5)
    rows = [
        make_job(processor="inspect", run_after=oldest_due),
        make_job(processor="inspect", run_after=now - timedelta(seconds=1)),
        make_job(processor="inspect", run_after=now + timedelta(minutes=1)),  # backoff: not due
        make_job(processor="thumbnail", status=JobStatus.succeeded.value, run_after=now - timedelta(hours=1)),
        make_job(processor="thumbnail", status=JobStatus.failed.value, run_after=now - timedelta(hours=2)),
        make_job(processor="thumbnail", status=JobStatus.failed.value),
        make_job(processor="inspect", status=JobStatus.running.value, run_after=now - timedelta(hours=3)),
    ]
    for job in rows:
        repository.insert_job(db, job)

    assert sorted(repository.count_jobs(db)) == [
        ("failed", "thumbnail", 2),
        ("queued", "inspect", 3),
        ("running", "inspect", 1),
        ("succeeded", "thumbnail", 1),
    ]
    due, oldest = repository.queue_stats(db, now=now)
    assert due == 2
    assert oldest is not None
    assert oldest.utcoffset() == timedelta(0)
    assert abs((oldest - oldest_due).total_seconds()) < 0.001
    # Later, the job in backoff is due too; earlier, none is.
    assert repository.queue_stats(db, now=now + timedelta(minutes=2))[0] == 3
    assert repository.queue_stats(db, now=now - timedelta(hours=1)) == (0, None)
