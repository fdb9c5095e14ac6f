"""Publishing job ids to the Celery broker, and asking the broker how much it holds.

A publish happens after the row has committed. When it fails (broker down), the row keeps
``dispatched_at`` empty and the sweeper publishes it once the broker is back: an upload answered
202 while the broker is down still runs.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.celery_app import RUN_JOB, make_celery
from filejobs.models import utcnow
from filejobs.settings import Settings

log = logging.getLogger(__name__)

#: Errors that mean "the broker did not take it"; the sweeper tries again.
PUBLISH_ERRORS = (OperationalError, KombuError, ConnectionError, OSError, TimeoutError)


class CeleryDispatcher:
    """Publishes ``filejobs.run_job(job_id)`` to ``FILEJOBS_QUEUE`` on ``FILEJOBS_BROKER_URL``."""

    name = "celery"
    check_name = "broker"
    #: The broker keeps messages across this process's restarts; the sweeper only re-publishes
    #: jobs whose message never got there or may have been lost.
    durable = True

    def __init__(self, settings: Settings, db: Database, app: Celery | None = None) -> None:
        self.settings = settings
        self.db = db
        self.app = app or make_celery(settings)

    def publish(self, job_id: str, *, eta: datetime | None = None) -> bool:
        """Send one message; True when the broker accepted it."""
        try:
            self.app.send_task(RUN_JOB, args=[job_id], queue=self.settings.queue, eta=eta)
        except PUBLISH_ERRORS as exc:
            log.warning("job %s: broker did not take the message (%r); the sweeper will retry", job_id, exc)
            return False
        return True

    def submit(self, job_id: str) -> None:
        if self.publish(job_id):
            repository.mark_dispatched(self.db, [job_id])

    def submit_at(self, job_id: str, when: datetime) -> None:
        """Publish now, to run at ``when`` (a retry's backoff)."""
        if self.publish(job_id, eta=when if when > utcnow() else None):
            repository.mark_dispatched(self.db, [job_id])

    def cancelled(self, job_id: str) -> None:
        """Nothing to send: the worker running it re-reads its row every second and stops."""

    def check(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            conn.default_channel  # noqa: B018  (opens the channel: proves the broker answers)

    def pending_messages(self) -> int | None:
        """Messages ready in the queue (not counting ones workers hold), or None when unknown."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                declared = conn.default_channel.queue_declare(queue=self.settings.queue, passive=True)
                return int(declared.message_count)
        except Exception as exc:  # a missing queue, a broker that went away: just "unknown"
            log.debug("could not count the queue's messages: %r", exc)
            return None

    def close(self) -> None:
        self.app.close()
