"""Shared helpers for the job tests: direct row edits, finding worker children (bounded waits and
job rows come from :mod:`filejobs.testing`, re-exported here)."""

from __future__ import annotations

from typing import Any

import psutil
from sqlalchemy import update
from sqlmodel import col

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.models import Job
from filejobs.testing import make_job as make_job
from filejobs.testing import wait_until as wait_until


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
