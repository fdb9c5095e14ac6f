"""Re-publishing for a broker (a durable dispatcher): what the sweeper sends again, and what not.

The broker keeps messages across API restarts, so the sweeper must not re-publish every queued job
on every pass (a deep queue would double each time); it re-publishes the jobs whose publish never
succeeded, and those whose message may have been lost, bounded by what the broker still holds.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.celery_dispatch import CeleryDispatcher
from filejobs.jobs.sweeper import dispatch_due
from filejobs.models import JobStatus, utcnow
from filejobs.settings import Settings
from tests.conftest import make_settings
from tests.jobs.helpers import make_job, patch_job, row
from tests.services import migrated_database, require_port


class FakeBroker:
    """A durable dispatcher that records what it was given and reports a queue length."""

    name = "fake-broker"
    check_name = "broker"
    durable = True

    def __init__(self, db: Database, pending: int | None = 0) -> None:
        self.db = db
        self.pending = pending
        self.submitted: list[str] = []

    def submit(self, job_id: str) -> None:
        self.submitted.append(job_id)
        repository.mark_dispatched(self.db, [job_id])

    def cancelled(self, job_id: str) -> None:
        pass

    def check(self) -> None:
        pass

    def pending_messages(self) -> int | None:
        return self.pending


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


def queued(db: Database, n: int, **values: object) -> list[str]:
    ids = []
    for _ in range(n):
        job = repository.insert_job(db, make_job())
        if values:
            patch_job(db, job.id, **values)
        ids.append(job.id)
    return ids


def test_jobs_never_published_are_published_once(db: Database, settings: Settings) -> None:
    ids = queued(db, 3)
    broker = FakeBroker(db)
    assert dispatch_due(db=db, settings=settings, dispatcher=broker) == 3
    assert sorted(broker.submitted) == sorted(ids)
    assert all(row(db, i).dispatched_at is not None for i in ids)
    # The broker holds them now: the next passes publish nothing again.
    assert dispatch_due(db=db, settings=settings, dispatcher=broker) == 0
    assert dispatch_due(db=db, settings=settings, dispatcher=broker) == 0
    assert len(broker.submitted) == 3


def test_stale_messages_are_republished_only_beyond_what_the_broker_holds(
    db: Database, settings: Settings
) -> None:
    long_ago = utcnow() - timedelta(seconds=settings.redispatch_after + 30)
    stale = queued(db, 5, dispatched_at=long_ago)
    recent = queued(db, 2, dispatched_at=utcnow())

    holding_all = FakeBroker(db, pending=7)
    assert dispatch_due(db=db, settings=settings, dispatcher=holding_all) == 0

    holding_two = FakeBroker(db, pending=2)
    assert dispatch_due(db=db, settings=settings, dispatcher=holding_two) == 3
    assert set(holding_two.submitted) <= set(stale)
    assert not set(holding_two.submitted) & set(recent)

    # A broker that cannot say what it holds gets every stale job.
    for job_id in stale:
        patch_job(db, job_id, dispatched_at=long_ago)
    unknown = FakeBroker(db, pending=None)
    assert dispatch_due(db=db, settings=settings, dispatcher=unknown) == 5


def test_jobs_not_due_are_left_for_later(db: Database, settings: Settings) -> None:
    (later,) = queued(db, 1, run_after=utcnow() + timedelta(minutes=5))
    broker = FakeBroker(db)
    assert dispatch_due(db=db, settings=settings, dispatcher=broker) == 0
    patch_job(db, later, run_after=utcnow())
    assert dispatch_due(db=db, settings=settings, dispatcher=broker) == 1


def test_every_way_back_to_queued_forgets_the_old_message(db: Database, settings: Settings) -> None:
    """A requeued job's earlier message was consumed: it needs a new one."""
    (job_id,) = queued(db, 1)
    repository.mark_dispatched(db, [job_id])

    # A retryable failure.
    assert repository.claim_job(db, job_id, owner="w:1:a:0", lease_seconds=30) is not None
    outcome = repository.finish_failed(
        db, job_id, owner="w:1:a:0", code="flaky", message="", retryable=True, backoff=0
    )
    assert outcome.status is JobStatus.queued
    assert row(db, job_id).dispatched_at is None

    # A lost lease.
    repository.mark_dispatched(db, [job_id])
    assert repository.claim_job(db, job_id, owner="w:1:a:0", lease_seconds=30) is not None
    patch_job(db, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert repository.expire_leases(db) == [(job_id, JobStatus.queued)]
    assert row(db, job_id).dispatched_at is None

    # A release at shutdown.
    repository.mark_dispatched(db, [job_id])
    assert repository.claim_job(db, job_id, owner="w:1:a:0", lease_seconds=30) is not None
    assert repository.release_job(db, job_id, owner="w:1:a:0")
    assert row(db, job_id).dispatched_at is None

    # A retry by the client.
    repository.mark_dispatched(db, [job_id])
    repository.cancel_job(db, job_id)
    repository.retry_job(db, job_id, max_attempts=3)
    assert row(db, job_id).dispatched_at is None


def test_mark_dispatched_leaves_running_jobs_and_the_etag_alone(db: Database) -> None:
    (job_id,) = queued(db, 1)
    version = row(db, job_id).version
    assert repository.mark_dispatched(db, [job_id]) == 1
    assert row(db, job_id).version == version
    assert repository.claim_job(db, job_id, owner="w:1:a:0", lease_seconds=30) is not None
    assert repository.mark_dispatched(db, [job_id]) == 0


# ---- the real Celery dispatcher ------------------------------------------------------------


def celery_settings(tmp_path: Path, broker_url: str) -> Settings:
    return make_settings(
        tmp_path,
        backend="celery",
        broker_url=broker_url,
        queue=f"fj-test-{uuid.uuid4().hex}",
    )


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def on_redis(tmp_path: Path, db: Database) -> Iterator[CeleryDispatcher]:
    """A dispatcher publishing to a queue of its own on the machine's Redis (removed after)."""
    require_port("Redis", "127.0.0.1", 6379)
    import redis

    settings = celery_settings(tmp_path, REDIS_URL)
    dispatcher = CeleryDispatcher(settings, db)
    try:
        yield dispatcher
    finally:
        dispatcher.close()
        redis.Redis.from_url(REDIS_URL).delete(
            settings.queue, f"_kombu.binding.{settings.queue}", f"_kombu.binding_permanent.{settings.queue}"
        )


@pytest.fixture
def on_nothing(tmp_path: Path, db: Database) -> Iterator[CeleryDispatcher]:
    """A dispatcher whose broker is down (nothing listens on its port)."""
    from filejobs.testing import free_port

    dispatcher = CeleryDispatcher(celery_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0"), db)
    try:
        yield dispatcher
    finally:
        dispatcher.close()


def queued_on_redis(dispatcher: CeleryDispatcher) -> list[bytes]:
    import redis

    found: list[bytes] = redis.Redis.from_url(REDIS_URL).lrange(dispatcher.settings.queue, 0, -1)
    return found


def test_a_broker_that_is_down_leaves_the_job_for_the_sweeper(
    on_nothing: CeleryDispatcher, db: Database
) -> None:
    job = repository.insert_job(db, make_job())
    on_nothing.submit(job.id)
    assert on_nothing.publisher.flush(timeout=30)
    assert row(db, job.id).dispatched_at is None
    with pytest.raises(OperationalError):
        on_nothing.check()
    assert on_nothing.pending_messages() is None


def test_publishing_to_real_redis_marks_the_job_and_counts_the_message(
    on_redis: CeleryDispatcher, db: Database
) -> None:
    on_redis.check()
    job = repository.insert_job(db, make_job())
    on_redis.submit(job.id)
    assert on_redis.publisher.flush(timeout=30)
    assert row(db, job.id).dispatched_at is not None
    assert on_redis.pending_messages() == 1
    # Nothing but the id crosses the broker.
    raw = queued_on_redis(on_redis)
    assert len(raw) == 1
    message = json.loads(raw[0])
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == [job.id]
    assert kwargs == {}
    assert message["headers"]["task"] == "filejobs.run_job"


class GatedPublishes:
    """Wraps a dispatcher's ``publish_many``: the first call waits for :attr:`gate`, so ids
    submitted meanwhile wait in the queue together; records each call's ids."""

    def __init__(self, dispatcher: CeleryDispatcher) -> None:
        self.real = dispatcher.publish_many
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        dispatcher.publish_many = self  # type: ignore[method-assign]

    def __call__(self, job_ids: Sequence[str]) -> list[str]:
        self.calls.append(list(job_ids))
        self.entered.set()
        assert self.gate.wait(30), "the gate was never opened"
        return self.real(job_ids)

    def submit_while_the_first_waits(self, dispatcher: CeleryDispatcher, ids: list[str]) -> None:
        """Submit ``ids[0]``, and the rest once the publisher holds it; then open the gate."""
        dispatcher.submit(ids[0])
        assert self.entered.wait(30), "the publisher never took the first id"
        for job_id in ids[1:]:
            dispatcher.submit(job_id)
        self.gate.set()


def test_ids_waiting_together_are_published_and_marked_in_one_batch(
    on_redis: CeleryDispatcher, db: Database
) -> None:
    gated = GatedPublishes(on_redis)
    ids = [repository.insert_job(db, make_job()).id for _ in range(10)]
    # ids[1] twice: the sweeper's copy of an id the API also queued.
    gated.submit_while_the_first_waits(on_redis, [*ids, ids[1]])
    assert on_redis.publisher.flush(timeout=30)
    assert gated.calls == [ids[:1], ids[1:]]
    assert on_redis.publisher.batches == 2
    assert all(row(db, job_id).dispatched_at is not None for job_id in ids)
    assert on_redis.pending_messages() == 10


def test_after_a_failed_publish_the_queue_is_left_untried(on_nothing: CeleryDispatcher, db: Database) -> None:
    """A broker that is down costs one try, not one per queued id: the ids queued meanwhile go to
    the sweeper at once, so the queue cannot grow while each waits out a connection timeout."""
    gated = GatedPublishes(on_nothing)
    ids = [repository.insert_job(db, make_job()).id for _ in range(20)]
    gated.submit_while_the_first_waits(on_nothing, ids)
    assert on_nothing.publisher.flush(timeout=60)
    assert gated.calls == [ids[:1]], "a batch was tried while the broker was known down"
    assert on_nothing.publisher.batches == 0
    assert all(row(db, job_id).dispatched_at is None for job_id in ids)
    # The sweeper's next pass offers them all again.
    assert dispatch_due(db=db, settings=on_nothing.settings, dispatcher=on_nothing) == 20


def test_closing_publishes_what_is_queued(on_redis: CeleryDispatcher, db: Database) -> None:
    gated = GatedPublishes(on_redis)
    ids = [repository.insert_job(db, make_job()).id for _ in range(5)]
    gated.submit_while_the_first_waits(on_redis, ids)
    on_redis.close()  # returns once the queue is published
    assert all(row(db, job_id).dispatched_at is not None for job_id in ids)
    assert len(queued_on_redis(on_redis)) == 5
    with pytest.raises(RuntimeError, match="closed"):
        on_redis.submit(ids[0])


def test_closing_waits_for_a_stalled_broker_only_so_long(on_redis: CeleryDispatcher, db: Database) -> None:
    """A broker that takes the connection and then never answers must not hold up a shutdown."""
    stalled = threading.Event()
    released = threading.Event()

    def never_answers(job_ids: Sequence[str]) -> list[str]:
        stalled.set()
        released.wait(30)
        return []

    on_redis.publish_many = never_answers  # type: ignore[method-assign]
    try:
        job_id = repository.insert_job(db, make_job()).id
        on_redis.submit(job_id)
        assert stalled.wait(30)
        on_redis.publisher.close(timeout=0.2)
        assert row(db, job_id).dispatched_at is None
    finally:
        released.set()
