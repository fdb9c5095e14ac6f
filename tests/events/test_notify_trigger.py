"""The change feed's trigger (PostgreSQL) notifies of the changes a client can see, and only those,
and only while an API process has recorded itself as listening (``change_listeners``).

A claim, a progress change and a finish bump ``version`` and notify; a lease renewal and the
record of a dispatch do not (each would cost every listening backend a wake-up for nothing). The
notifications arrive in commit order, so once the one of a later change has arrived, one a change
before it sent would have arrived first: no waiting for something not to happen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from filejobs.db import Database
from filejobs.events.feed import CHANNEL
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.settings import Settings
from tests.events import worker_writes
from tests.jobs.helpers import make_job
from tests.services import fresh_postgres_database


@pytest.fixture
def databases() -> Iterator[tuple[Database, psycopg.Connection[tuple[object, ...]]]]:
    """A migrated PostgreSQL database, and a connection listening on the change feed's channel
    (recorded as a listener for an hour)."""
    with fresh_postgres_database() as plain:
        url = Settings(database_url=plain).resolved_database_url
        upgrade(url)
        db = Database(url)
        try:
            with psycopg.connect(plain, autocommit=True) as listener:
                listener.execute(f"LISTEN {CHANNEL}")
                record_listener(listener, "test", seconds=3600)
                yield db, listener
        finally:
            db.dispose()


def record_listener(conn: psycopg.Connection[tuple[object, ...]], name: str, *, seconds: float) -> None:
    conn.execute(
        "INSERT INTO change_listeners (id, expires_at)"
        " VALUES (%s, clock_timestamp() + make_interval(secs => %s))"
        " ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        (name, seconds),
    )


def payloads_until(db: Database, listener: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """The payloads of the notifications sent so far: a marker job is inserted, and every
    notification up to its own (which comes after them, in commit order) is returned."""
    marker = repository.insert_job(db, make_job())
    payloads: list[str] = []
    for note in listener.notifies(timeout=15.0):
        if note.payload == f"U {marker.id}":
            return payloads
        payloads.append(note.payload)
    raise AssertionError(f"no notification of the marker job; got {payloads}")


def test_only_visible_changes_notify(
    databases: tuple[Database, psycopg.Connection[tuple[object, ...]]],
) -> None:
    db, listener = databases
    job = repository.insert_job(db, make_job())
    changed = f"U {job.id}"
    assert payloads_until(db, listener) == [changed]

    assert repository.mark_dispatched(db, [job.id]) == 1  # not a client-visible change
    assert payloads_until(db, listener) == []
    worker_writes.claim(db, job.id)
    assert payloads_until(db, listener) == [changed]

    assert repository.renew_lease(db, job.id, owner=worker_writes.WORKER, lease_seconds=60.0)
    assert payloads_until(db, listener) == []
    worker_writes.progress(db, job.id, 0.5)
    assert payloads_until(db, listener) == [changed]

    worker_writes.succeed(db, job.id)
    repository.delete_job(db, job.id)
    assert payloads_until(db, listener) == [changed, f"D {job.id} {job.owner}"]


def test_nothing_is_notified_while_no_listener_is_recorded(
    databases: tuple[Database, psycopg.Connection[tuple[object, ...]]],
) -> None:
    """A notifying commit holds a cluster-wide lock through its WAL flush: with no event stream open
    anywhere (no current listener row, an expired one included), the trigger sends nothing."""
    db, listener = databases
    record_listener(listener, "test", seconds=-1)  # expired
    quiet = repository.insert_job(db, make_job())
    worker_writes.claim(db, quiet.id)
    record_listener(listener, "test", seconds=3600)
    assert payloads_until(db, listener) == []  # the marker's own notification came, none before it
    worker_writes.progress(db, quiet.id, 0.5)
    assert payloads_until(db, listener) == [f"U {quiet.id}"]


def test_a_new_listener_waits_for_a_writer_whose_trigger_did_not_see_it(
    databases: tuple[Database, psycopg.Connection[tuple[object, ...]]],
) -> None:
    """A writer whose trigger ran before the listener's row existed sends no notification: the
    listener must not read the rows changed meanwhile before that writer has committed."""
    import asyncio

    from filejobs.events import listeners

    db, listener = databases
    listener.execute("DELETE FROM change_listeners")
    job = repository.insert_job(db, make_job())
    plain = listener.info.dsn
    with psycopg.connect(plain) as writer:  # a transaction: the claim's trigger runs, uncommitted
        writer.execute("UPDATE jobs SET version = version + 1, status = 'running' WHERE id = %s", (job.id,))

        async def register() -> float:
            async with await psycopg.AsyncConnection.connect(plain, autocommit=True) as conn:
                task = asyncio.create_task(listeners.register(conn, "new"))
                done, _ = await asyncio.wait({task}, timeout=listeners.SETTLE_MAX / 4)
                assert not done, "registered while a writer that did not see the row was still open"
                started = time.monotonic()
                await asyncio.to_thread(writer.commit)
                await task
                return time.monotonic() - started

        assert asyncio.run(register()) < listeners.SETTLE_MAX  # it returned once the writer committed
    assert payloads_until(db, listener) == []  # that writer notified nobody: the scan must find it
