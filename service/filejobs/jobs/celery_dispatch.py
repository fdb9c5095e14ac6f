"""Publishing job ids to the Celery broker, and asking the broker how much it holds.

A publish happens after the row has committed. When it fails (broker down), the row keeps
``dispatched_at`` empty and the sweeper publishes it once the broker is back: an upload answered
202 while the broker is down still runs.

:meth:`CeleryDispatcher.submit` only queues the id: one thread per process (:class:`Publisher`)
takes every id waiting at that moment, publishes them through one producer, and records them
dispatched in one ``UPDATE``. Published one per call from a request's thread, each with an
``UPDATE`` transaction of its own, an upload cost the API process 3.5 ms of CPU on Redis and
PostgreSQL; batched, 1.6 ms, and twice the uploads per second (``scripts/cpu_per_request.py
--what upload`` with the Celery backend, ``docs/performance.md`` round eleven). After a failed
publish the broker is taken as down for :data:`DOWN_FOR` seconds: what is queued meanwhile is not
tried (each try would wait out the connection timeout) but left to the sweeper, so the queue stays
short however long the broker is away; :meth:`Publisher.close` waits :data:`CLOSE_WITHIN` at most.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.celery_app import RUN_JOB, make_celery
from filejobs.jobs.finisher import CommitThread
from filejobs.models import utcnow
from filejobs.settings import Settings

log = logging.getLogger(__name__)

#: Errors that mean "the broker did not take it"; the sweeper tries again.
PUBLISH_ERRORS = (OperationalError, KombuError, ConnectionError, OSError, TimeoutError)
#: Seconds after a failed publish during which queued ids are left to the sweeper untried.
DOWN_FOR = 1.0
#: Seconds :meth:`Publisher.close` waits for the queue to be published (a broker that stalls
#: instead of refusing); what is left then goes to the sweeper of the next process.
CLOSE_WITHIN = 10.0


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
        self.publisher = Publisher(self)

    def publish(self, job_id: str, *, eta: datetime | None = None, producer: Any = None) -> bool:
        """Send one message now; True when the broker accepted it."""
        try:
            self.app.send_task(RUN_JOB, args=[job_id], queue=self.settings.queue, eta=eta, producer=producer)
        except PUBLISH_ERRORS as exc:
            log.warning("job %s: broker did not take the message (%r); the sweeper will retry", job_id, exc)
            return False
        return True

    def publish_many(self, job_ids: Sequence[str]) -> list[str]:
        """Send one message each through one producer, in order, until one is refused; the ids
        the broker accepted."""
        published: list[str] = []
        try:
            with self.app.producer_or_acquire() as producer:
                for job_id in job_ids:
                    if not self.publish(job_id, producer=producer):
                        break
                    published.append(job_id)
        except PUBLISH_ERRORS as exc:  # no connection to take a producer from
            log.warning("the broker could not be reached (%r); the sweeper will retry", exc)
        return published

    def submit(self, job_id: str) -> None:
        """Queue ``job_id`` for the publishing thread; returns at once."""
        self.publisher.submit(job_id)

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
        """Publish what is queued (or leave it to the sweeper), then close the connections."""
        self.publisher.close()
        self.app.close()


class Publisher(CommitThread[str]):
    """The thread that publishes queued ids in batches and records them dispatched together."""

    what = "broker publisher"

    def __init__(self, dispatcher: CeleryDispatcher) -> None:
        super().__init__()
        self.dispatcher = dispatcher
        self._down_until = 0.0
        self._changed = threading.Condition()
        self._queued = 0
        self._taken = 0
        self.batches = 0  # for tests and curiosity: batches published

    def submit(self, job_id: str) -> None:
        with self._changed:
            self._queued += 1
        self._start()
        self._queue.put(job_id)

    def close(self, timeout: float | None = CLOSE_WITHIN) -> bool:
        """Publish what is queued, then stop the thread; after ``timeout`` s, log and go on (the
        thread is a daemon; the ids it did not publish keep ``dispatched_at`` empty)."""
        if super().close(timeout):
            return True
        log.warning("the broker publisher did not finish within %g s; the sweeper has the rest", timeout)
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every id queued before this call was published or left to the sweeper;
        False on timeout."""
        with self._changed:
            queued = self._queued
            return self._changed.wait_for(lambda: self._taken >= queued, timeout)

    def _take(self, batch: list[str]) -> None:
        try:
            self._publish(list(dict.fromkeys(batch)))  # the sweeper's and the API's may meet
        finally:
            with self._changed:
                self._taken += len(batch)
                self._changed.notify_all()

    def _publish(self, job_ids: list[str]) -> None:
        if time.monotonic() < self._down_until:
            log.debug("%d job(s) left to the sweeper: the broker was down a moment ago", len(job_ids))
            return
        published = self.dispatcher.publish_many(job_ids)
        if len(published) < len(job_ids):
            self._down_until = time.monotonic() + DOWN_FOR
        if not published:
            return
        self.batches += 1
        try:
            repository.mark_dispatched(self.dispatcher.db, published)
        except Exception:  # the sweeper publishes them again: a duplicate message is harmless
            log.exception("%d published job(s) could not be recorded as dispatched", len(published))
