"""Changing job rows the way a worker in another process does (claim, progress, finish), so the
event tests see changes that reach the server only through the database."""

from __future__ import annotations

from filejobs.db import Database
from filejobs.jobs import repository

WORKER = "test-worker"
LEASE = 60.0


def claim(db: Database, job_id: str) -> None:
    assert repository.claim_job(db, job_id, owner=WORKER, lease_seconds=LEASE) is not None


def progress(db: Database, job_id: str, value: float) -> None:
    assert repository.set_progress(
        db, job_id, owner=WORKER, progress=value, message=None, lease_seconds=LEASE
    )


def succeed(db: Database, job_id: str) -> None:
    assert repository.finish_succeeded(
        db, job_id, owner=WORKER, result={"ok": True}, output_key=None, output_name=None,
        output_content_type=None,
    )  # fmt: skip
