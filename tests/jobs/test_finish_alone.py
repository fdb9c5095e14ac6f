"""A finish committed alone (``repository.succeed_alone``, ``Finisher``'s batch of one), on SQLite
and PostgreSQL: a job whose success has nothing for the webhook outbox is moved to ``succeeded``
by one statement of its own; a job with a ``callback_url`` or an enabled endpoint of its key, or
one no longer ours, is left untouched for the transaction that writes the outbox rows (or says
it is not ours); the finisher uses the one statement only for a batch of one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.finisher import Finisher
from filejobs.models import WebhookSecret, utcnow
from tests.endpoints import add_endpoint
from tests.jobs.helpers import row, wait_until
from tests.jobs.test_finisher import DELIVERIES, OWNER, Followups, blocked_first, claimed
from tests.services import migrated_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


def params(job_id: str) -> dict[str, Any]:
    return repository.succeeded_params(
        job_id,
        owner=OWNER,
        result={"n": 1},
        output_key=None,
        output_name=None,
        output_content_type=None,
    )


def deliveries(db: Database) -> list[tuple[str, str]]:
    with db.read() as session:
        found = session.execute(select(DELIVERIES.c.job_id, DELIVERIES.c.event_type)).all()
    return sorted((job_id, event) for job_id, event in found)


def test_a_quiet_success_is_one_statement_of_its_own(db: Database) -> None:
    add_endpoint(db, "k2")  # another key's endpoint: not this job's business
    add_endpoint(db, "k1", enabled=False)  # a disabled one of its own key: sends nothing
    job = claimed(db, owner="k1")
    assert repository.succeed_alone(db, params(job.id)) is True
    done = row(db, job.id)
    assert (done.status, done.result, done.lease_owner, done.progress) == ("succeeded", {"n": 1}, None, 1.0)
    assert done.version == job.version + 1
    assert done.notification is None
    assert deliveries(db) == []


def test_a_success_with_outbox_work_is_left_to_the_transaction(db: Database) -> None:
    add_endpoint(db, "k1")
    with db.write() as session:
        session.add(WebhookSecret(owner="k3", secret="whsec_" + "B" * 43 + "=", created_at=utcnow()))
    by_endpoint, by_callback = (
        claimed(db, owner="k1"),
        claimed(db, owner="k3", callback_url="http://127.0.0.1:9/cb"),
    )
    for job in (by_endpoint, by_callback):
        assert repository.succeed_alone(db, params(job.id)) is False
        assert row(db, job.id).status == "running"  # untouched
        with db.write() as session:
            assert repository.succeed_in(session, params(job.id), max_pending_webhooks=100)
        assert row(db, job.id).status == "succeeded"
    assert deliveries(db) == sorted([(by_endpoint.id, "job.succeeded"), (by_callback.id, "job.succeeded")])


def test_the_transaction_reads_the_outbox_targets_only_when_the_key_has_some(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``succeed_in``'s ``UPDATE … RETURNING`` says whether the job's key has an enabled endpoint
    (or the job a ``callback_url``): the outbox's own ``SELECT`` runs only then."""
    recorded: list[str] = []
    real = repository.record_job_event

    def counted(session: Session, job_id: str, *, max_pending: int) -> int:
        recorded.append(job_id)
        return real(session, job_id, max_pending=max_pending)

    monkeypatch.setattr(repository, "record_job_event", counted)
    add_endpoint(db, "k2")  # another key's
    add_endpoint(db, "k1", enabled=False)
    quiet, loud = claimed(db, owner="k1"), claimed(db, owner="k2")
    for job in (quiet, loud):
        with db.write() as session:
            assert repository.succeed_in(session, params(job.id), max_pending_webhooks=100)
    assert recorded == [loud.id]
    assert deliveries(db) == [(loud.id, "job.succeeded")]
    assert (row(db, quiet.id).status, row(db, loud.id).status) == ("succeeded", "succeeded")


def test_a_job_no_longer_ours_is_not_written_alone(db: Database) -> None:
    cancelled = claimed(db)
    repository.cancel_job(db, cancelled.id)
    assert repository.succeed_alone(db, params(cancelled.id)) is False
    assert row(db, cancelled.id).status == "cancelled"
    other = claimed(db)
    assert repository.succeed_alone(db, {**params(other.id), "b_owner": "someone else"}) is False
    assert row(db, other.id).status == "running"


class Alone:
    """An ``alone`` that counts its calls and does what it is told."""

    def __init__(self, do: Callable[[], bool]) -> None:
        self.do = do
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.do()


def succeed(job_id: str) -> Callable[[Session], bool]:
    return lambda session: repository.succeed_in(session, params(job_id), max_pending_webhooks=100)


def test_the_finisher_writes_a_batch_of_one_alone(db: Database) -> None:
    finisher = Finisher(db)
    try:
        quiet, loud = claimed(db).id, claimed(db, owner="k1").id
        add_endpoint(db, "k1")
        followups = Followups(db, expected=2)
        alone_quiet = Alone(lambda: repository.succeed_alone(db, params(quiet)))
        finisher.finish(succeed(quiet), followups.then(quiet), alone_quiet)
        followups_wait_for(followups, quiet)
        alone_loud = Alone(lambda: repository.succeed_alone(db, params(loud)))
        finisher.finish(succeed(loud), followups.then(loud), alone_loud)
        followups.wait()
    finally:
        finisher.close()
    assert (alone_quiet.calls, alone_loud.calls) == (1, 1)
    assert followups.told == {quiet: True, loud: True}
    assert followups.seen == {quiet: "succeeded", loud: "succeeded"}
    assert deliveries(db) == [(loud, "job.succeeded")]  # the transaction wrote its outbox row


def followups_wait_for(followups: Followups, job_id: str) -> None:
    wait_until(lambda: job_id in followups.told, timeout=30, what=f"the follow-up of {job_id}")


def test_an_alone_that_raises_leaves_the_job_running(db: Database) -> None:
    finisher = Finisher(db)
    try:
        job_id = claimed(db).id
        followups = Followups(db, expected=1)

        def broken() -> bool:
            raise RuntimeError("connection lost")

        finisher.finish(succeed(job_id), followups.then(job_id), Alone(broken))
        followups.wait()
    finally:
        finisher.close()
    assert followups.told == {job_id: None}  # whether it landed is unknown: to the sweeper
    assert row(db, job_id).status == "running"


def test_finishes_waiting_together_are_not_written_alone(db: Database) -> None:
    finisher = Finisher(db)
    try:
        followups = Followups(db, expected=4)
        later = [claimed(db).id for _ in range(3)]
        release, first = blocked_first(finisher, db, followups)
        alones = [Alone(lambda: pytest.fail("a batch of several went alone")) for _ in later]
        for job_id, alone in zip(later, alones, strict=True):
            finisher.finish(succeed(job_id), followups.then(job_id), alone)
        batches = finisher.batches
        release.set()
        followups.wait()
    finally:
        finisher.close()
    assert finisher.batches == batches + 2  # the first, then the three in one transaction
    assert [alone.calls for alone in alones] == [0, 0, 0]
    assert followups.seen == dict.fromkeys([first, *later], "succeeded")
