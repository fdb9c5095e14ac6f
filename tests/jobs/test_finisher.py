"""Final statuses committed in batches (``jobs/finisher.py``, ``GroupCommitter.finish``), on SQLite
and PostgreSQL: many finishes share one transaction; each job's follow-up runs only after its
status is committed; the webhook outbox rows commit with the status; one job whose change raises
is left running (to the sweeper) without undoing the others or the new rows committed beside it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlmodel import Session

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.finisher import Finisher, Finishes
from filejobs.jobs.group_commit import GroupCommitter, NothingWritten
from filejobs.models import Job, WebhookDelivery
from tests.endpoints import add_endpoint
from tests.jobs.helpers import make_job, row
from tests.services import migrated_database

OWNER = "host:1:abc:0"
DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture(params=["finisher", "group committer"])
def finisher(request: pytest.FixtureRequest, db: Database) -> Iterator[Finisher | GroupCommitter]:
    made: Finisher | GroupCommitter
    made = Finisher(db) if request.param == "finisher" else GroupCommitter(db, sync_dir=lambda: None)
    yield made
    made.close()


def claimed(db: Database, **overrides: Any) -> Job:
    """A job claimed by OWNER: its row as stored after the claim."""
    job = repository.insert_job(db, make_job(**overrides))
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=30) is not None
    return row(db, job.id)


@contextlib.contextmanager
def counting_savepoints(savepoints: list[object]) -> Iterator[None]:
    """Within: every savepoint a session takes is appended to ``savepoints``."""
    real_begin_nested = Session.begin_nested

    def counted(session: Session) -> Any:
        savepoints.append(session)
        return real_begin_nested(session)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Session, "begin_nested", counted)
        yield


def succeed(job_id: str, result: dict[str, Any] | None = None) -> Callable[[Session], bool]:
    params = repository.succeeded_params(
        job_id,
        owner=OWNER,
        result=result or {"n": 1},
        output_key=None,
        output_name=None,
        output_content_type=None,
    )
    return lambda session: repository.succeed_in(session, params, max_pending_webhooks=100)


class Followups:
    """The ``then`` of each job: records what it was told and what a fresh read saw at that moment."""

    def __init__(self, db: Database, expected: int) -> None:
        self.db = db
        self.expected = expected
        self.told: dict[str, bool | None] = {}
        self.seen: dict[str, str] = {}
        self._lock = threading.Lock()
        self.all_done = threading.Event()

    def then(self, job_id: str) -> Callable[[bool | None], None]:
        def record(written: bool | None) -> None:
            status = row(self.db, job_id).status  # what any reader sees when the follow-up runs
            with self._lock:
                self.told[job_id] = written
                self.seen[job_id] = status
                if len(self.told) == self.expected:
                    self.all_done.set()

        return record

    def wait(self) -> None:
        assert self.all_done.wait(timeout=30), f"only {len(self.told)} of {self.expected} follow-ups ran"


def blocked_first(finisher: Finishes, db: Database, followups: Followups) -> tuple[threading.Event, str]:
    """Hand over a first job whose write waits until released: everything handed over meanwhile
    queues up and goes in the next transaction, together. (Its transaction holds the write lock
    meanwhile: make the other rows before.)"""
    entered, release = threading.Event(), threading.Event()
    first = claimed(db).id
    write = succeed(first)

    def slow(session: Session) -> bool:
        entered.set()
        assert release.wait(timeout=30)
        return write(session)

    finisher.finish(slow, followups.then(first))
    assert entered.wait(timeout=30)
    return release, first


def test_finishes_waiting_together_share_one_transaction(
    db: Database, finisher: Finisher | GroupCommitter
) -> None:
    followups = Followups(db, expected=6)
    later = [claimed(db).id for _ in range(5)]
    release, first = blocked_first(finisher, db, followups)
    for job_id in later:
        finisher.finish(succeed(job_id), followups.then(job_id))
    batches_before = finisher.batches
    release.set()
    followups.wait()
    assert finisher.batches == batches_before + 2  # the first alone, the five others in one
    assert followups.told == dict.fromkeys([first, *later], True)
    # Each follow-up ran once its status was committed: a fresh read already saw it final.
    assert followups.seen == dict.fromkeys([first, *later], "succeeded")


def test_a_job_no_longer_ours_is_told_so_and_the_others_commit(
    db: Database, finisher: Finisher | GroupCommitter
) -> None:
    followups = Followups(db, expected=3)
    mine, cancelled = claimed(db).id, claimed(db).id
    repository.cancel_job(db, cancelled)
    release, first = blocked_first(finisher, db, followups)
    finisher.finish(succeed(mine), followups.then(mine))
    finisher.finish(succeed(cancelled), followups.then(cancelled))
    release.set()
    followups.wait()
    assert followups.told == {first: True, mine: True, cancelled: False}
    assert followups.seen == {first: "succeeded", mine: "succeeded", cancelled: "cancelled"}


def test_a_change_that_raises_leaves_that_job_running_and_commits_the_others(
    db: Database, finisher: Finisher | GroupCommitter
) -> None:
    followups = Followups(db, expected=4)
    before, broken, after = claimed(db).id, claimed(db).id, claimed(db).id
    release, first = blocked_first(finisher, db, followups)

    def raises(session: Session) -> bool:
        succeed(broken)(session)  # written, then undone with the failure
        raise RuntimeError("boom")

    finisher.finish(succeed(before), followups.then(before))
    finisher.finish(raises, followups.then(broken))
    finisher.finish(succeed(after), followups.then(after))
    release.set()
    followups.wait()
    assert followups.told == {first: True, before: True, broken: None, after: True}
    assert followups.seen[broken] == "running"  # still leased: the sweeper queues it again
    assert row(db, broken).lease_owner == OWNER
    assert {followups.seen[job_id] for job_id in (first, before, after)} == {"succeeded"}


def test_the_outbox_rows_commit_with_the_final_status(
    db: Database, finisher: Finisher | GroupCommitter
) -> None:
    add_endpoint(db, "k1")
    jobs = [claimed(db, owner="k1").id for _ in range(3)]
    followups = Followups(db, expected=3)
    for job_id in jobs:
        finisher.finish(succeed(job_id, {"job": job_id}), followups.then(job_id))
    followups.wait()
    with db.read() as session:
        found = session.execute(select(DELIVERIES.c.job_id, DELIVERIES.c.event_type)).all()
    assert sorted(found) == sorted((job_id, "job.succeeded") for job_id in jobs)
    assert {row(db, job_id).notification for job_id in jobs} == {"pending"}


def test_new_rows_and_final_statuses_share_the_group_committers_transaction(db: Database) -> None:
    """A final status that raises does not undo the uploads' rows committed beside it."""
    committer = GroupCommitter(db, sync_dir=lambda: None)
    try:
        followups = Followups(db, expected=3)
        good, broken = claimed(db).id, claimed(db).id
        new = make_job()
        release, first = blocked_first(committer, db, followups)

        def raises(session: Session) -> bool:
            raise RuntimeError("boom")

        async def both() -> None:
            inserted = asyncio.ensure_future(committer.insert(new))
            await asyncio.sleep(0)  # the insert is queued before the finishes
            committer.finish(succeed(good), followups.then(good))
            committer.finish(raises, followups.then(broken))
            batches = committer.batches
            release.set()
            await inserted
            followups.wait()
            assert committer.batches == batches + 2  # the first finish alone; the rest in one

        asyncio.run(both())
        assert followups.told == {first: True, good: True, broken: None}
        assert row(db, new.id).status == "queued"
        assert row(db, good).status == "succeeded"
        assert row(db, broken).status == "running"
    finally:
        committer.close()


def test_close_commits_what_was_handed_over(db: Database) -> None:
    finisher = Finisher(db)
    followups = Followups(db, expected=20)
    jobs = [claimed(db).id for _ in range(20)]
    for job_id in jobs:
        finisher.finish(succeed(job_id), followups.then(job_id))
    finisher.close()
    assert followups.all_done.is_set()
    assert {row(db, job_id).status for job_id in jobs} == {"succeeded"}
    with pytest.raises(RuntimeError):
        finisher.finish(succeed(jobs[0]), followups.then(jobs[0]))


def test_a_row_refused_before_it_wrote_fails_alone_without_a_savepoint(db: Database) -> None:
    """A ``prepare`` raising :class:`NothingWritten` (an upload by hash whose content went) fails
    its own job; the rows and final statuses of the same transaction commit, and no savepoint
    was taken for it."""
    committer = GroupCommitter(db, sync_dir=lambda: None)
    savepoints: list[object] = []
    try:
        followups = Followups(db, expected=2)
        good = claimed(db).id
        kept, refused = make_job(), make_job()
        release, first = blocked_first(committer, db, followups)

        def refuse(session: Session, values: dict[str, Any]) -> None:
            raise NothingWritten("gone")

        async def together() -> None:
            inserts = [
                asyncio.ensure_future(committer.insert(kept)),
                asyncio.ensure_future(committer.insert(refused, prepare=refuse)),
            ]
            await asyncio.sleep(0)  # both queued before the finish and the release
            committer.finish(succeed(good), followups.then(good))
            batches = committer.batches
            with counting_savepoints(savepoints):
                release.set()
                got = await asyncio.gather(*inserts, return_exceptions=True)
                followups.wait()
            assert got[0] is None
            assert isinstance(got[1], NothingWritten)
            assert committer.batches == batches + 2  # the first finish alone; the rest in one

        asyncio.run(together())
        assert followups.told == {first: True, good: True}
        assert row(db, kept.id).status == "queued"
        assert repository.get_job(db, refused.id) is None
        assert len(savepoints) == 1  # the final status's own, none for the rows
    finally:
        committer.close()


@pytest.mark.parametrize("one_raises", [False, True])
def test_the_group_committers_final_statuses_share_one_savepoint(db: Database, one_raises: bool) -> None:
    """A batch's final statuses are written in one savepoint (not one each); when one of them
    raises, that savepoint is undone and each is written again in a savepoint of its own: the one
    that raises is left running, the others commit, their outbox rows once."""
    committer = GroupCommitter(db, sync_dir=lambda: None)
    savepoints: list[object] = []
    try:
        add_endpoint(db, "k1")
        later = [claimed(db, owner="k1").id for _ in range(4)]
        broken = claimed(db, owner="k1").id
        followups = Followups(db, expected=len(later) + (2 if one_raises else 1))
        release, first = blocked_first(committer, db, followups)
        for job_id in later[:2]:
            committer.finish(succeed(job_id), followups.then(job_id))
        if one_raises:
            write = succeed(broken)

            def raises(session: Session) -> bool:
                write(session)  # its UPDATE and outbox row are undone with the savepoint
                raise RuntimeError("boom")

            committer.finish(raises, followups.then(broken))
        for job_id in later[2:]:
            committer.finish(succeed(job_id), followups.then(job_id))
        batches = committer.batches
        with counting_savepoints(savepoints):
            release.set()
            followups.wait()
        assert committer.batches == batches + 2  # the first alone; the rest in one
        # the rest's batch (the first's savepoint was taken before counting); after a raise,
        # one more per final status
        assert len(savepoints) == (1 + len(later) + 1 if one_raises else 1)
        assert followups.told == {
            first: True,
            **dict.fromkeys(later, True),
            **({broken: None} if one_raises else {}),
        }
        assert {row(db, job_id).status for job_id in later} == {"succeeded"}
        assert row(db, broken).status == "running"
        with db.read() as session:
            found = session.execute(select(DELIVERIES.c.job_id)).scalars().all()
        assert sorted(found) == sorted(later)
    finally:
        committer.close()


def test_a_batchs_new_rows_go_in_together_and_each_before_commit_sees_its_own(db: Database) -> None:
    """The rows of a batch's plain jobs are inserted together (one statement for those queued
    between two that need their row first); a job's ``before_commit`` sees its own row, and one
    in a savepoint of its own (``isolated``) that raises fails that job alone."""
    committer = GroupCommitter(db, sync_dir=lambda: None)
    inserts: list[int] = []  # the rows each INSERT INTO jobs statement carried

    def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.startswith("INSERT INTO jobs "):
            inserts.append(len(params) if many else 1)

    try:
        followups = Followups(db, expected=1)
        plain = [make_job() for _ in range(5)]
        reading, refused = make_job(), make_job()
        seen: list[str | None] = []

        def reads_its_row(session: Session) -> None:
            found = session.connection().execute(select(Job.status).where(Job.id == reading.id))
            seen.append(found.scalar())

        def raises(session: Session) -> None:
            raise RuntimeError("its key was taken over")

        release, _ = blocked_first(committer, db, followups)
        event.listen(db.engine, "before_cursor_execute", count)

        async def together() -> list[BaseException | None]:
            queued = [
                committer.insert(plain[0]),
                committer.insert(plain[1]),
                committer.insert(reading, before_commit=reads_its_row, isolated=False),
                committer.insert(plain[2]),
                committer.insert(refused, before_commit=raises),
                committer.insert(plain[3]),
                committer.insert(plain[4]),
            ]
            tasks = [asyncio.ensure_future(insert) for insert in queued]
            await asyncio.sleep(0)  # all queued before the release
            release.set()
            return await asyncio.gather(*tasks, return_exceptions=True)

        got = asyncio.run(together())
        followups.wait()
        assert [type(outcome).__name__ for outcome in got] == [
            "NoneType", "NoneType", "NoneType", "NoneType", "RuntimeError", "NoneType", "NoneType",
        ]  # fmt: skip
        assert seen == ["queued"]
        assert {row(db, job.id).status for job in [*plain, reading]} == {"queued"}
        assert repository.get_job(db, refused.id) is None
        # [0, 1, reading] before its before_commit; [2] before the savepoint; refused in it (undone);
        # [3, 4] at the end.
        assert inserts == [3, 1, 1, 2]
    finally:
        if event.contains(db.engine, "before_cursor_execute", count):
            event.remove(db.engine, "before_cursor_execute", count)
        committer.close()
