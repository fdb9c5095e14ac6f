"""Where the event streams' changes come from: one feed per API process, shared by every stream.

The database is the source of truth, whichever process changed a row (an API process, a local
worker, a Celery worker on another machine). The feed learns that rows changed in three ways and
then reads them, once for all streams:

- in this process, :class:`filejobs.events.hub.ChangeHub` names each job it changes at once;
- on PostgreSQL, a trigger (migration 0005) sends ``NOTIFY filejobs_jobs`` with the job's id for
  every insert, visible change and delete, after the commit and in commit order, while some API
  process listens (:mod:`filejobs.events.listeners`); while a stream is open the feed LISTENs on a
  connection of its own, records itself as a listener, and after every (re)connect looks at the
  rows changed meanwhile. While none is open it does not listen: a notifying commit holds a
  cluster-wide lock through its WAL flush, every listening backend is woken by every job's claim
  and finish (about 0.3 ms of PostgreSQL's CPU per job, ``scripts/pg_job_writes --listeners``), and
  nothing but a stream reads those notifications. The webhook outbox's ``W <delivery id>`` comes on
  a channel of its own (``filejobs_webhooks``), listened to always, for the webhook sender;
- on SQLite (one machine, but possibly several processes), it looks for rows changed since the
  last look every ``events_poll_interval`` while a stream is open: an index scan of
  ``updated_at`` that reaches ``events_lookback`` seconds back, because a writer stamps
  ``updated_at`` before it waits for the write lock and may commit after a later stamp.

A job's changes reach the streams in version order, each version at most once. Nothing runs
while no stream is open (the webhook channel's PostgreSQL listener excepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from anyio import to_thread

from filejobs import metrics
from filejobs.background import BackgroundTask
from filejobs.db import Database
from filejobs.events import listeners, rows
from filejobs.events.subscription import Deleted, Subscription
from filejobs.models import utcnow
from filejobs.webhooks.outbox import CHANNEL as WEBHOOK_CHANNEL

log = logging.getLogger(__name__)

#: The jobs table's trigger's channel (migration 0005).
CHANNEL = "filejobs_jobs"
#: Seconds between attempts to (re)connect the PostgreSQL listener.
LISTEN_RETRY = 2.0
#: Seconds to wait after a failed look before the next.
STEP_RETRY = 1.0


class ChangeFeed(BackgroundTask):
    task_name = "filejobs change feed"

    def __init__(self, db: Database, *, poll_interval: float, lookback: float) -> None:
        self._db = db
        self._poll_interval = poll_interval
        self._lookback = timedelta(seconds=lookback)
        self._listen = not db.is_sqlite
        self._subscriptions: set[Subscription] = set()
        self._per_owner: Counter[str] = Counter()
        self._hints: set[str] = set()
        self._deleted: dict[str, str | None] = {}
        self._known: dict[str, tuple[int, datetime, str]] = {}  # id: (version, updated_at, owner)
        self._since: datetime | None = None
        self._notify_listeners: list[Callable[[str], None]] = []
        self._scan_needed = True
        self._wake = asyncio.Event()
        self._closing = False
        self._listener_id = listeners.new_listener_id()

    # ---- the loop side ------------------------------------------------------------------------

    @property
    def lookback(self) -> timedelta:
        return self._lookback

    @property
    def streams(self) -> int:
        return len(self._subscriptions)

    def streams_of(self, owner: str) -> int:
        """How many of the open streams are ``owner``'s."""
        return self._per_owner[owner]

    def owners(self) -> set[str]:
        """The owners of the open streams."""
        return set(self._per_owner)

    def subscribe(self, subscription: Subscription) -> None:
        if self._closing:
            subscription.close()
        if subscription not in self._subscriptions:
            self._subscriptions.add(subscription)
            self._per_owner[subscription.owner] += 1
            metrics.EVENT_STREAMS.inc()
        self._wake.set()

    def close_streams_of(self, owners: set[str]) -> None:
        """End the streams of ``owners`` (their key was revoked). On the event loop."""
        for subscription in self._subscriptions:
            if subscription.owner in owners:
                subscription.close()

    def close_streams(self) -> None:
        """The server is stopping: end every stream now (clients reconnect with Last-Event-ID)
        rather than hold the graceful shutdown until its timeout. On the event loop."""
        self._closing = True
        for subscription in self._subscriptions:
            subscription.close()

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._per_owner[subscription.owner] -= 1
            if not self._per_owner[subscription.owner]:
                del self._per_owner[subscription.owner]
            metrics.EVENT_STREAMS.dec()
            if not self._subscriptions:
                self._wake.set()  # the last stream went: stop listening to job changes

    def on_notify(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(delivery_id)`` on the event loop for each ``W <id>`` NOTIFY on the channel:
        webhook deliveries committed by any process (the webhook sender wakes on it)."""
        self._notify_listeners.append(listener)

    def hint(self, job_id: str) -> None:
        """``job_id`` changed (or went): look at it soon. On the event loop."""
        if self._subscriptions:
            self._hints.add(job_id)
            self._wake.set()

    def deleted(self, job_id: str, owner: str | None) -> None:
        """``job_id`` of ``owner`` was deleted. On the event loop."""
        if self._subscriptions:
            self._deleted[job_id] = owner
            self._wake.set()

    async def _run(self) -> None:
        webhooks = asyncio.create_task(self._listen_forever(WEBHOOK_CHANNEL)) if self._listen else None
        jobs: asyncio.Task[None] | None = None  # the job changes' listener, while a stream is open
        try:
            while True:
                polling = bool(self._subscriptions) and not self._listen
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval if polling else None)
                self._wake.clear()
                if self._listen and bool(self._subscriptions) != (jobs is not None):
                    if jobs is None:
                        jobs = asyncio.create_task(self._listen_forever(CHANNEL))
                    else:
                        await self._stop_listening(jobs)
                        jobs = None
                if not self._subscriptions:
                    self._forget()
                    continue
                try:
                    await self._step(scan=not self._listen or self._scan_needed)
                except Exception:
                    log.exception("looking for changed jobs failed; trying again")
                    await asyncio.sleep(STEP_RETRY)
        finally:
            if webhooks is not None:
                await _cancel(webhooks)
            if jobs is not None:
                await self._stop_listening(jobs)

    async def _stop_listening(self, jobs: asyncio.Task[None]) -> None:
        """End the job changes' listener: its connection closes (the server forgets the LISTEN), and
        its row goes, so the trigger stops notifying for it."""
        await _cancel(jobs)
        await to_thread.run_sync(listeners.unregister, self._db, self._listener_id)

    def _forget(self) -> None:
        """No stream is open: what the feed knew goes stale, so the next stream starts afresh."""
        self._hints.clear()
        self._deleted.clear()
        self._known.clear()
        self._since = None
        self._scan_needed = True

    async def _step(self, *, scan: bool) -> None:
        hints, self._hints = self._hints, set()
        deleted, self._deleted = self._deleted, {}
        if scan:
            self._scan_needed = False
        try:
            views, since = await to_thread.run_sync(self._read, hints, scan)
        except BaseException:
            self._hints |= hints  # looked at next time
            self._deleted.update(deleted)
            if scan:
                self._scan_needed = True
            raise
        if since is not None:
            self._since = since
        for job_id in hints - views.keys():
            deleted.setdefault(job_id, None)
        self._publish(views, deleted)

    def _publish(self, views: dict[str, SimpleNamespace], deleted: dict[str, str | None]) -> None:
        known = self._known
        for view in sorted(views.values(), key=lambda view: (view.updated_at, view.id)):
            before = known.get(view.id)
            if before is not None and before[0] >= view.version:
                continue
            known[view.id] = (view.version, view.updated_at, view.owner)
            for subscription in self._subscriptions:
                if subscription.wants(view.owner, view.id):
                    subscription.push(view)
        for job_id, owner in deleted.items():
            before = known.pop(job_id, None)
            gone = Deleted(job_id, owner if owner is not None else (before[2] if before else None))
            for subscription in self._subscriptions:
                if subscription.wants(gone.owner, job_id):
                    subscription.push(gone)
        if self._since is not None and len(known) > 1000:
            stale = [job_id for job_id, (_, updated, _) in known.items() if updated <= self._since]
            for job_id in stale:  # older than any scan reaches: a hint brings them back if needed
                del known[job_id]

    # ---- the thread side ----------------------------------------------------------------------

    def _read(self, hints: set[str], scan: bool) -> tuple[dict[str, SimpleNamespace], datetime | None]:
        """The rows to look at: the hinted ones, and (``scan``) those whose version changed since the
        last scan. Also returns where the next scan starts."""
        wanted = set(hints)
        since = None
        if scan:
            start = self._since if self._since is not None else utcnow() - self._lookback
            newest = start
            known = self._known
            for job_id, version, updated_at in rows.versions_changed_since(self._db, start):
                before = known.get(job_id)
                if before is None or before[0] < version:
                    wanted.add(job_id)
                newest = max(newest, updated_at)
            since = max(start, newest - self._lookback)
        return (rows.views_by_id(self._db, wanted) if wanted else {}), since

    # ---- PostgreSQL --------------------------------------------------------------------------

    async def _listen_forever(self, channel: str) -> None:
        """LISTEN on ``channel`` on a connection of its own, reconnecting, until cancelled. After each
        (re)connect to the job changes' channel, the rows changed meanwhile are looked at."""
        import psycopg  # the PostgreSQL driver; only imported where it is the database

        url = self._db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        jobs = channel == CHANNEL
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {channel}")
                    if jobs:
                        await self._hear_job_changes(conn)
                    else:
                        async for note in conn.notifies():
                            self._on_notify(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening on %s failed (%s); again in %.0f s", channel, exc, LISTEN_RETRY)
            if jobs:
                self._scan_needed = True
            await asyncio.sleep(LISTEN_RETRY)

    async def _hear_job_changes(self, conn: Any) -> None:
        """Job changes are notified only while this listener's row is current: record it, look at
        the rows changed meanwhile, pass notifications on; again whenever the row had expired."""
        while True:
            await listeners.register(conn, self._listener_id)
            self._scan_needed = True  # what changed while nobody listened
            self._wake.set()
            while await self._hear(conn):
                pass

    async def _hear(self, conn: Any) -> bool:
        """Pass on the notifications of :data:`listeners.RENEW_EVERY` seconds, then renew this
        listener's row; False when it had expired (it must be recorded again, and the rows changed
        meanwhile looked at)."""
        renew_at = time.monotonic() + listeners.RENEW_EVERY
        async with contextlib.aclosing(conn.notifies(timeout=listeners.RENEW_EVERY)) as notes:
            async for note in notes:
                self._on_notify(note.payload)
                if time.monotonic() >= renew_at:
                    break
        return await listeners.renew(conn, self._listener_id)

    def _on_notify(self, payload: str) -> None:
        """``U <id>`` for an insert or change, ``D <id> <owner>`` for a delete (the trigger's), ``W <id>``
        for new webhook deliveries (the outbox's)."""
        op, _, rest = payload.partition(" ")
        job_id, _, owner = rest.partition(" ")
        if op == "W":  # new webhook deliveries (filejobs.webhooks.outbox), not a job change
            for listener in self._notify_listeners:
                listener(rest)
        elif op == "D":
            self.deleted(job_id, owner)
        else:
            self.hint(job_id)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
