"""Looking at one job on behalf of its owner: find it (404 otherwise), wait for it to change."""

from __future__ import annotations

import asyncio
import contextlib
import time

from filejobs.errors import NotFound
from filejobs.events.hub import ChangeHub
from filejobs.jobs.fast_read import JobReader
from filejobs.models import Job, etag_of

#: How often a long-poll re-reads the row, to see changes made by other processes.
WAIT_POLL = 0.5


async def load_job(*, reader: JobReader, job_id: str, owner: str) -> Job:
    """The job of ``owner``, or 404 (another owner's job is as unknown as a missing one)."""
    job = await reader.aget(job_id, owner=owner)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    return job


async def wait_for_change(
    *, reader: JobReader, hub: ChangeHub, job: Job, owner: str, baseline: str, seconds: float
) -> Job:
    """Return as soon as the job's ETag differs from ``baseline``, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    event = hub.subscribe(job.id)
    try:
        while etag_of(job) == baseline:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(WAIT_POLL, remaining))
            event.clear()
            job = await load_job(reader=reader, job_id=job.id, owner=owner)
    finally:
        hub.unsubscribe(job.id, event)
    return job
