"""Shared helpers for the job tests: bounded waits, direct row edits, finding worker children."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import psutil
from sqlalchemy import update
from sqlmodel import col

from filejobs.db import Database
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.models import Job, JobStatus, utcnow

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    error: type[Exception] = AssertionError,
) -> T:
    """Poll ``predicate`` until it returns something truthy; raise ``error`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def row(db: Database, job_id: str) -> Job:
    job = repository.get_job(db, job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


def wait_for_status(db: Database, job_id: str, *statuses: str, timeout: float = 15.0) -> Job:
    def check() -> Job | None:
        job = repository.get_job(db, job_id)
        return job if job is not None and job.status in statuses else None

    return wait_until(check, timeout=timeout, what=f"job {job_id} to become {'/'.join(statuses)}")


def patch_job(db: Database, job_id: str, **values: Any) -> None:
    """Change columns directly, as a crash or the passing of time would leave them."""
    with db.write() as session:
        assert session.exec(update(Job).where(col(Job.id) == job_id).values(**values)).rowcount == 1


def make_job(**overrides: Any) -> Job:
    """A queued job row (without a stored file)."""
    now = utcnow()
    job_id = overrides.pop("id", None) or new_job_id()
    values: dict[str, Any] = {
        "id": job_id,
        "status": JobStatus.queued.value,
        "processor": "inspect",
        "params": {},
        "file_name": "f.txt",
        "file_size": 3,
        "file_sha256": "0" * 64,
        "file_content_type": "text/plain",
        "storage_key": f"uploads/{job_id}",
        "max_attempts": 3,
        "created_at": now,
        "updated_at": now,
        "run_after": now - timedelta(seconds=1),
    }
    values.update(overrides)
    return Job(**values)


def child_pids() -> list[int]:
    """Live worker child processes (``python -m filejobs.jobs.child``) of this test process."""
    pids = []
    for proc in psutil.Process().children(recursive=False):
        try:
            if "filejobs.jobs.child" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
