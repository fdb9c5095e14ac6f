"""ChangeFeed against real databases: rows changed by someone else (another process, here another
engine with no hint to the feed) reach the subscriptions, in version order, tenant by tenant.

SQLite: found by the feed's poll of changed rows. PostgreSQL: the poll is set to an hour, so only
the trigger's NOTIFY (migration 0005) can deliver them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from filejobs.db import Database
from filejobs.events.feed import ChangeFeed
from filejobs.events.subscription import Change, Deleted, Subscription
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.models import Job, utcnow
from filejobs.settings import Settings
from tests.events import worker_writes
from tests.jobs.helpers import make_job
from tests.services import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feed.db'}"
        return
    with fresh_postgres_database() as plain:
        yield Settings(database_url=plain).resolved_database_url


@pytest.fixture
def writer(url: str) -> Iterator[Database]:
    """The database as another process changes it."""
    upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


def feed_for(url: str, **overrides: Any) -> tuple[ChangeFeed, Database]:
    db = Database(url)
    poll = 0.05 if db.is_sqlite else 3600.0  # PostgreSQL: NOTIFY or nothing
    return ChangeFeed(
        db, poll_interval=overrides.get("poll", poll), lookback=overrides.get("lookback", 5.0)
    ), db


async def collect(
    subscription: Subscription, done: Callable[[list[Change]], bool], timeout: float = 15.0
) -> list[Change]:
    seen: list[Change] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; saw {[(c.id, getattr(c, 'version', None)) for c in seen]}"
        seen += await subscription.changes(left)
    return seen


def run_job(db: Database, job_id: str) -> None:
    """Claim, three progress notes, succeed: versions 2 to 6."""
    worker_writes.claim(db, job_id)
    for value in (0.25, 0.5, 0.75):
        worker_writes.progress(db, job_id, value)
    worker_writes.succeed(db, job_id)


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return asyncio.to_thread(function, *args)


def statuses(changes: list[Change]) -> list[str]:
    return [change.status for change in changes if not isinstance(change, Deleted)]


def test_changes_made_elsewhere_arrive_in_version_order(url: str, writer: Database) -> None:
    async def scenario() -> list[Change]:
        feed, db = feed_for(url)
        feed.start()
        subscription = Subscription(owner="alice")
        feed.subscribe(subscription)
        try:
            job = make_job(owner="alice")
            await in_thread(repository.insert_job, writer, job)
            await in_thread(run_job, writer, job.id)
            return await collect(subscription, lambda seen: "succeeded" in statuses(seen))
        finally:
            await feed.stop()
            db.dispose()

    seen = asyncio.run(scenario())
    versions = [change.version for change in seen if not isinstance(change, Deleted)]
    assert versions == sorted(set(versions)), versions  # increasing, each at most once
    assert statuses(seen)[-1] == "succeeded"
    assert seen[-1].version == 6  # type: ignore[union-attr]  # insert 1, claim, 3 x progress, finish


def test_each_tenant_hears_only_of_its_own_jobs(url: str, writer: Database) -> None:
    async def scenario() -> tuple[list[Change], list[Change], list[Change]]:
        feed, db = feed_for(url)
        feed.start()
        alice, bob = Subscription(owner="alice"), Subscription(owner="bob")
        jobs = [make_job(owner="alice"), make_job(owner="bob"), make_job(owner="alice")]
        one = Subscription(owner="alice", job_id=jobs[2].id)
        for subscription in (alice, bob, one):
            feed.subscribe(subscription)
        try:
            for job in jobs:
                await in_thread(repository.insert_job, writer, job)
            for job in jobs:
                await in_thread(run_job, writer, job.id)

            def finished(count: int) -> Callable[[list[Change]], bool]:
                return lambda seen: statuses(seen).count("succeeded") == count

            return (
                await collect(alice, finished(2)),
                await collect(bob, finished(1)),
                await collect(one, finished(1)),
            )
        finally:
            await feed.stop()
            db.dispose()

    alice, bob, one = asyncio.run(scenario())
    assert {change.owner for change in alice} == {"alice"}  # type: ignore[union-attr]
    assert {change.owner for change in bob} == {"bob"}  # type: ignore[union-attr]
    assert len({change.id for change in alice}) == 2
    assert len({change.id for change in one}) == 1


def test_a_write_that_commits_after_a_later_stamp_is_not_lost(url: str, writer: Database) -> None:
    """A writer stamps updated_at, then waits for the lock; another stamps later and commits first.
    The feed has seen the later stamp before the earlier one commits: the lookback finds it."""

    async def scenario() -> list[Change]:
        feed, db = feed_for(url, poll=0.05)
        feed.start()
        subscription = Subscription(owner="")
        feed.subscribe(subscription)
        try:
            early, late = make_job(), make_job()
            await in_thread(repository.insert_job, writer, early)
            await in_thread(repository.insert_job, writer, late)
            await collect(subscription, lambda seen: {c.id for c in seen} == {early.id, late.id})
            stamp = utcnow()

            def commit(job_id: str, at: Any) -> None:
                with writer.write() as session:
                    session.exec(  # type: ignore[call-overload]
                        update(Job)
                        .where(col(Job.id) == job_id)
                        .values(version=col(Job.version) + 1, updated_at=at, message="late")
                    )

            await in_thread(commit, late.id, stamp)
            await collect(subscription, lambda seen: bool(seen))
            await in_thread(commit, early.id, stamp - timedelta(seconds=1))  # stamped earlier
            return await collect(subscription, lambda seen: bool(seen))
        finally:
            await feed.stop()
            db.dispose()

    seen = asyncio.run(scenario())
    assert [(change.message, change.version) for change in seen] == [("late", 2)]  # type: ignore[union-attr]


def test_a_deletion_reaches_the_jobs_tenant(url: str, writer: Database) -> None:
    """Deleted here (the route tells the feed) or, on PostgreSQL, anywhere (the trigger)."""

    async def scenario() -> tuple[list[Change], list[Change]]:
        feed, db = feed_for(url)
        feed.start()
        alice, bob = Subscription(owner="alice"), Subscription(owner="bob")
        feed.subscribe(alice)
        feed.subscribe(bob)
        try:
            here, elsewhere = make_job(owner="alice"), make_job(owner="alice")
            for job in (here, elsewhere):
                await in_thread(repository.insert_job, writer, job)
            await collect(alice, lambda seen: len(seen) == 2)
            await in_thread(lambda: repository.delete_job(writer, here.id))
            feed.deleted(here.id, "alice")
            feed.hint(here.id)
            gone = await collect(alice, lambda seen: bool(seen))
            if not db.is_sqlite:
                await in_thread(lambda: repository.delete_job(writer, elsewhere.id))
                gone += await collect(alice, lambda seen: any(change.id == elsewhere.id for change in seen))
            return gone, await bob.changes(0.2)
        finally:
            await feed.stop()
            db.dispose()

    gone, bob = asyncio.run(scenario())
    assert all(isinstance(change, Deleted) and change.owner == "alice" for change in gone)
    assert len(gone) == (1 if url.startswith("sqlite") else 2)  # each once
    assert bob == []


def test_nothing_is_read_while_no_stream_is_open(
    url: str, writer: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filejobs.events import rows

    reads: list[str] = []
    for name in ("views_by_id", "versions_changed_since"):
        original = getattr(rows, name)
        monkeypatch.setattr(rows, name, lambda *a, _o=original, _n=name: reads.append(_n) or _o(*a))

    async def scenario() -> None:
        feed, db = feed_for(url, poll=0.01)
        feed.start()
        try:
            feed.hint("anything")
            await in_thread(repository.insert_job, writer, make_job())
            await asyncio.sleep(0.2)  # a window in which a poll would have run twenty times
        finally:
            await feed.stop()
            db.dispose()

    asyncio.run(scenario())
    assert reads == []


def recorded_listeners(plain_url: str) -> int:
    """How many current rows ``change_listeners`` holds (the trigger notifies only while one is)."""
    import psycopg

    with psycopg.connect(plain_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM change_listeners WHERE expires_at > clock_timestamp()"
        ).fetchone()
    return int(row[0]) if row else 0


def listening(plain_url: str, channel: str) -> int:
    """How many backends of the database last ran ``LISTEN <channel>`` (and are still connected)."""
    import psycopg

    with psycopg.connect(plain_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            (f"LISTEN {channel}",),
        ).fetchone()
    return int(row[0]) if row else 0


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await in_thread(condition):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_on_postgresql_job_changes_are_listened_to_only_while_a_stream_is_open() -> None:
    """A notifying commit holds a cluster-wide lock through its WAL flush, and every listening
    backend is woken by every claim and finish: with no stream open the feed is not recorded as a
    listener (so the trigger sends nothing), but it always listens to the webhook outbox's channel."""
    from filejobs.webhooks.outbox import CHANNEL as WEBHOOKS

    with fresh_postgres_database() as plain:
        url = Settings(database_url=plain).resolved_database_url
        upgrade(url)
        writer = Database(url)

        async def scenario() -> list[str]:
            feed, db = feed_for(url)
            woken: list[str] = []
            feed.on_notify(woken.append)
            feed.start()
            try:
                await until(lambda: listening(plain, WEBHOOKS) == 1)
                assert recorded_listeners(plain) == 0
                subscription = Subscription(owner="alice")
                feed.subscribe(subscription)
                await until(lambda: recorded_listeners(plain) == 1)
                job = make_job(owner="alice")
                await in_thread(repository.insert_job, writer, job)
                await collect(subscription, lambda seen: any(c.id == job.id for c in seen))
                feed.unsubscribe(subscription)
                await until(lambda: recorded_listeners(plain) == 0)
                # The webhook sender is still told of deliveries committed elsewhere.
                await in_thread(notify, plain, WEBHOOKS, "W msg_1")
                await until(lambda: bool(woken))
                assert listening(plain, WEBHOOKS) == 1
                return woken
            finally:
                await feed.stop()
                db.dispose()

        try:
            assert asyncio.run(scenario()) == ["msg_1"]
        finally:
            writer.dispose()


def notify(plain_url: str, channel: str, payload: str) -> None:
    import psycopg

    with psycopg.connect(plain_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
