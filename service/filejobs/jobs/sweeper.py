"""The sweeper: what keeps the queue whole after crashes, and the disk from growing forever.

One pass (:func:`sweep`) returns expired leases, and those of dead worker processes on this host,
to the queue (or fails them when attempts are spent), re-dispatches due queued jobs, removes upload
temp files and orphaned uploads that never got a row, and resumable uploads past their expiry,
deletes finished jobs past retention with their files and finished webhook deliveries past it, and
forgets Idempotency-Keys past their time to live.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from filejobs import metrics
from filejobs.db import Database
from filejobs.jobs import files, idempotency, repository
from filejobs.jobs.dispatch import Dispatcher
from filejobs.jobs.liveness import owner_is_dead_here
from filejobs.models import JobStatus, utcnow
from filejobs.settings import Settings
from filejobs.storage import Storage, StorageUnavailable
from filejobs.tus.store import UploadStore
from filejobs.webhooks import deliveries

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: int = 0
    failed: int = 0
    dispatched: int = 0
    temp_removed: int = 0
    orphans_removed: int = 0
    expired: int = 0
    idempotency_expired: int = 0
    webhooks_expired: int = 0
    uploads_expired: int = 0


def sweep(
    *,
    db: Database,
    storage: Storage,
    settings: Settings,
    dispatcher: Dispatcher,
    scan_orphans: bool = True,
    uploads: UploadStore | None = None,
) -> SweepReport:
    report = SweepReport()
    for _job_id, status in repository.expire_leases(
        db, owner_is_dead=owner_is_dead_here, max_pending_webhooks=settings.webhook_max_pending
    ):
        metrics.LEASES_EXPIRED.labels(status.value).inc()
        if status is JobStatus.queued:
            report.requeued += 1
        else:
            report.failed += 1
    report.dispatched = dispatch_due(db=db, settings=settings, dispatcher=dispatcher)
    report.temp_removed = storage.remove_stale_temp(settings.temp_max_age)
    if scan_orphans:
        report.orphans_removed = remove_orphan_uploads(db=db, storage=storage, min_age=settings.temp_max_age)
    cutoff = utcnow() - settings.retention
    for job in repository.expired_jobs(db, cutoff=cutoff):
        garbage = repository.delete_finished(db, job.id, cutoff=cutoff)
        if garbage is not None:
            report.expired += 1
            try:
                files.collect(storage, garbage)  # only what no remaining job references
            except StorageUnavailable as exc:  # the row is gone: a later orphan scan removes them
                log.warning("expired job %s: its files stay until the storage is back: %s", job.id, exc)
    report.idempotency_expired = idempotency.expire(db)
    report.webhooks_expired = deliveries.purge_finished(db, cutoff=cutoff)
    if uploads is not None:
        report.uploads_expired = uploads.remove_expired(time.time())
        metrics.RESUMABLE_UPLOADS.labels("expired").inc(report.uploads_expired)
    if report.requeued or report.failed or report.orphans_removed or report.expired or report.uploads_expired:
        log.info("sweep: %s", report)
    return report


def dispatch_due(*, db: Database, settings: Settings, dispatcher: Dispatcher) -> int:
    """Hand due queued jobs to the dispatcher again; returns how many were handed over.

    An in-process queue died with its process, so it gets every due job (it ignores ids it
    already holds). A broker keeps its messages, so it gets only the jobs whose publish never
    succeeded, and those published over ``redispatch_after`` ago for which the broker's queue
    holds too few messages (lost with a broker restart): one message each, not one per pass.
    """
    if not dispatcher.durable:
        ids = repository.due_job_ids(db)
    else:
        stale_before = utcnow() - timedelta(seconds=settings.redispatch_after)
        never, stale = repository.undispatched_job_ids(db, stale_before=stale_before)
        if stale:
            pending = dispatcher.pending_messages()
            if pending is not None:
                stale = stale[: max(0, len(stale) - pending)]
        ids = never + stale
    for job_id in ids:
        dispatcher.submit(job_id)
    return len(ids)


def remove_orphan_uploads(*, db: Database, storage: Storage, min_age: float) -> int:
    """Stored uploads and outputs no row references, once ``min_age`` s old: an upload whose row
    never committed (the process died in between), bytes whose last reference went in a
    transaction the process died after (:func:`filejobs.jobs.files.remove_orphans`)."""
    return files.remove_orphans(db=db, storage=storage, min_age=min_age)
