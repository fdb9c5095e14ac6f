"""What can be done to a job once it exists: dispatch, cancel, retry, delete.

Each command changes the row, then tells the others: the dispatcher (a cancelled job stops), the
in-process hub (long-polls and event streams wake), the change feed (a deleted job's streams hear
of it) and the storage (a deleted job's files go).
"""

from __future__ import annotations

import logging
from functools import partial

from anyio import to_thread

from filejobs.db import Database
from filejobs.events.feed import ChangeFeed
from filejobs.events.hub import ChangeHub
from filejobs.jobs import files, repository
from filejobs.jobs.backpressure import Admission
from filejobs.jobs.dispatch import Dispatcher
from filejobs.jobs.fast_read import JobReader
from filejobs.jobs.queries import load_job
from filejobs.models import Job
from filejobs.storage import Storage, StorageUnavailable

log = logging.getLogger(__name__)


async def dispatch(*, hub: ChangeHub, dispatcher: Dispatcher, job_id: str) -> None:
    """After the answer to a submit or a retry: tell the event streams of the queued job, and hand
    it to the dispatcher (a queue put: the local pool's, or the broker publisher's thread)."""
    hub.notify(job_id)
    dispatcher.submit(job_id)


async def cancel_job(
    *,
    db: Database,
    dispatcher: Dispatcher,
    hub: ChangeHub,
    job_id: str,
    owner: str,
    max_pending_webhooks: int = repository.MAX_PENDING_WEBHOOKS,
) -> Job:
    """Cancel a queued or running job of ``owner`` (404 if none, 409 if it has finished)."""
    job = await to_thread.run_sync(
        partial(repository.cancel_job, db, job_id, owner=owner, max_pending_webhooks=max_pending_webhooks)
    )
    dispatcher.cancelled(job_id)
    hub.notify(job_id)
    return job


async def retry_job(
    *,
    db: Database,
    reader: JobReader,
    admission: Admission,
    hub: ChangeHub,
    max_attempts: int,
    job_id: str,
    owner: str,
) -> Job:
    """Queue a failed or cancelled job of ``owner`` again; the caller dispatches it after answering.
    404 before 429/503 for a job that is not the owner's."""
    await load_job(reader=reader, job_id=job_id, owner=owner)
    await to_thread.run_sync(admission.check_new_job, owner)
    job = await to_thread.run_sync(
        partial(repository.retry_job, db, job_id, max_attempts=max_attempts, owner=owner)
    )
    hub.notify(job_id)
    return job


async def delete_job(
    *,
    db: Database,
    dispatcher: Dispatcher,
    feed: ChangeFeed,
    hub: ChangeHub,
    storage: Storage,
    job_id: str,
    owner: str,
) -> None:
    """Delete a job of ``owner`` and its files, cancelling it first if it is still running."""
    job, garbage = await to_thread.run_sync(partial(repository.delete_job_releasing, db, job_id, owner=owner))
    dispatcher.cancelled(job_id)
    feed.deleted(job_id, job.owner)
    hub.notify(job_id)
    try:
        await to_thread.run_sync(files.collect, storage, garbage)
    except StorageUnavailable as exc:  # the row is gone: the sweeper's orphan scan removes them later
        log.warning("job %s deleted; its files stay until the storage is back: %s", job.id, exc)
