"""Every conditional UPDATE on the jobs table, against a real (migrated) SQLite database."""

from __future__ import annotations

import base64
import dataclasses
import functools
import itertools
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from filejobs.db import Database
from filejobs.errors import BadRequest, Conflict, NotFound
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.models import Job, JobStatus, utcnow
from tests.jobs.helpers import make_job, patch_job, row

OWNER = "host:1:abc:0"
OTHER = "host:2:def:0"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated database file, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "jobs.db"
    upgrade(f"sqlite:///{path}")
    return path


def open_copy(template: Path, target: Path) -> Database:
    shutil.copyfile(template, target)
    return Database(f"sqlite:///{target}")


@pytest.fixture
def db(migrated: Path, tmp_path: Path) -> Iterator[Database]:
    database = open_copy(migrated, tmp_path / "jobs.db")
    yield database
    database.dispose()


def insert(db: Database, **overrides: Any) -> Job:
    return repository.insert_job(db, make_job(**overrides))


def claimed(db: Database, owner: str = OWNER, **overrides: Any) -> Job:
    """A job claimed by ``owner``: its row as stored after the claim."""
    job = insert(db, **overrides)
    assert repository.claim_job(db, job.id, owner=owner, lease_seconds=30) is not None
    return row(db, job.id)


def snapshot(db: Database, job_id: str) -> dict[str, Any]:
    return row(db, job_id).model_dump()


def close_to(a: Any, b: Any, seconds: float = 2.0) -> bool:
    return bool(abs((a - b).total_seconds()) <= seconds)


# ---- reads ----------------------------------------------------------------------------------


def test_get_job_unknown_and_malformed_ids(db: Database) -> None:
    job = insert(db)
    assert repository.get_job(db, job.id) is not None
    assert repository.get_job(db, str(uuid.uuid4())) is None  # well-formed, not a v7 id we issue
    assert repository.get_job(db, "../../etc/passwd") is None
    with pytest.raises(NotFound):
        repository.require_job(db, "nope")
    assert repository.job_exists(db, job.id)
    assert not repository.job_exists(db, str(uuid.uuid4()))


def test_inserted_row_round_trips_with_utc_datetimes(db: Database) -> None:
    job = insert(db, params={"a": [1, 2]})
    got = row(db, job.id)
    assert got.status == "queued"
    assert got.params == {"a": [1, 2]}
    assert got.version == 1
    assert got.created_at.tzinfo is not None
    assert got.created_at == job.created_at


def test_due_job_ids_oldest_first_and_only_due(db: Database) -> None:
    now = utcnow()
    later = insert(db, run_after=now - timedelta(seconds=1))
    earlier = insert(db, run_after=now - timedelta(seconds=10))
    insert(db, run_after=now + timedelta(seconds=60))  # not due
    insert(db, status="failed", run_after=now - timedelta(seconds=60))  # not queued
    assert repository.due_job_ids(db) == [earlier.id, later.id]
    assert repository.due_job_ids(db, limit=1) == [earlier.id]


# ---- claim ----------------------------------------------------------------------------------


def test_claim_sets_running_lease_and_counts_the_attempt(db: Database) -> None:
    job = insert(db)
    before = utcnow()
    claim = repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5)
    got = row(db, job.id)
    assert got.status == "running"
    assert got.attempts == 1
    assert got.lease_owner == OWNER
    assert got.lease_expires_at is not None
    assert close_to(got.lease_expires_at, before + timedelta(seconds=5))
    assert got.started_at is not None
    assert close_to(got.started_at, before)
    assert got.progress == 0.0
    assert got.version == 2
    # What the runner gets back: the claimed row's columns it reads, as stored after the claim.
    fields = dataclasses.fields(repository.Claimed)
    assert claim == repository.Claimed(
        **{field.name: getattr(got, field.name) for field in fields if field.name != "input_data"}
    )


def test_second_claim_of_the_same_job_returns_none(db: Database) -> None:
    job = claimed(db)
    before = snapshot(db, job.id)
    assert repository.claim_job(db, job.id, owner=OTHER, lease_seconds=5) is None
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is None
    assert snapshot(db, job.id) == before  # not even the version moved


def test_claim_waits_for_run_after(db: Database) -> None:
    job = insert(db, run_after=utcnow() + timedelta(seconds=60))
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is None
    assert row(db, job.id).attempts == 0
    patch_job(db, job.id, run_after=utcnow() - timedelta(milliseconds=1))
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is not None


def test_claim_unknown_or_terminal_job(db: Database) -> None:
    assert repository.claim_job(db, str(uuid.uuid4()), owner=OWNER, lease_seconds=5) is None
    for status in ("succeeded", "failed", "cancelled"):
        job = insert(db, status=status)
        assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is None
        assert row(db, job.id).status == status


def race(*actions: Callable[[], Any]) -> list[Any]:
    """Run ``actions`` in threads released together by a barrier; their results (or exceptions)
    in order."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def runner(index: int, action: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = action()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=runner, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    return results


def test_many_threads_claiming_one_job_exactly_one_wins(db: Database) -> None:
    owners = [f"worker-{i}" for i in range(12)]
    for _ in range(5):
        job = insert(db)
        results = race(
            *(
                functools.partial(repository.claim_job, db, job.id, owner=owner, lease_seconds=30)
                for owner in owners
            )
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
        winners = [(owner, got) for owner, got in zip(owners, results, strict=True) if got is not None]
        assert len(winners) == 1
        owner, got = winners[0]
        assert (got.id, got.attempts) == (job.id, 1)
        stored = row(db, job.id)
        assert stored.attempts == 1
        assert stored.lease_owner == owner
        assert stored.version == 2


def test_cancel_racing_finish_has_exactly_one_winner(db: Database) -> None:
    for _ in range(10):
        job = claimed(db)
        cancel, finish = race(
            functools.partial(repository.cancel_job, db, job.id),
            functools.partial(
                repository.finish_succeeded,
                db,
                job.id,
                owner=OWNER,
                result={},
                output_key=None,
                output_name=None,
                output_content_type=None,
            ),
        )
        outcome = {"finish": finish, "cancel": "conflict" if isinstance(cancel, Conflict) else cancel.status}
        final = row(db, job.id)
        if outcome["finish"]:
            assert outcome["cancel"] == "conflict"
            assert final.status == "succeeded"
        else:
            assert outcome["cancel"] == "cancelled"
            assert final.status == "cancelled"
        assert final.version == 3  # claim, then exactly one more change


# ---- the owner's writes ---------------------------------------------------------------------


def _renew(db: Database, job_id: str, owner: str) -> bool:
    return repository.renew_lease(db, job_id, owner=owner, lease_seconds=60)


def _progress(db: Database, job_id: str, owner: str) -> bool:
    return repository.set_progress(db, job_id, owner=owner, progress=0.5, message="half", lease_seconds=60)


def _succeed(db: Database, job_id: str, owner: str) -> bool:
    return repository.finish_succeeded(
        db, job_id, owner=owner, result={"x": 1}, output_key=None, output_name=None, output_content_type=None
    )


def _fail_retryable(db: Database, job_id: str, owner: str) -> bool:
    return repository.finish_failed(
        db, job_id, owner=owner, code="c", message="m", retryable=True, backoff=0
    ).owned


def _fail_final(db: Database, job_id: str, owner: str) -> bool:
    return repository.finish_failed(
        db, job_id, owner=owner, code="c", message="m", retryable=False, backoff=0
    ).owned


def _release(db: Database, job_id: str, owner: str) -> bool:
    return repository.release_job(db, job_id, owner=owner)


WORKER_WRITES: list[Callable[[Database, str, str], bool]] = [
    _renew,
    _progress,
    _succeed,
    _fail_retryable,
    _fail_final,
    _release,
]
WRITE_IDS = ["renew", "progress", "succeed", "fail-retryable", "fail-final", "release"]


@pytest.mark.parametrize("write", WORKER_WRITES, ids=WRITE_IDS)
def test_worker_writes_succeed_for_the_owner(db: Database, write: Callable[..., bool]) -> None:
    job = claimed(db)
    assert write(db, job.id, OWNER) is True


@pytest.mark.parametrize("write", WORKER_WRITES, ids=WRITE_IDS)
def test_worker_writes_refused_for_another_owner(db: Database, write: Callable[..., bool]) -> None:
    job = claimed(db)
    before = snapshot(db, job.id)
    assert write(db, job.id, OTHER) is False
    assert snapshot(db, job.id) == before


@pytest.mark.parametrize("write", WORKER_WRITES, ids=WRITE_IDS)
def test_worker_writes_refused_after_cancel(db: Database, write: Callable[..., bool]) -> None:
    job = claimed(db)
    repository.cancel_job(db, job.id)
    before = snapshot(db, job.id)
    assert before["status"] == "cancelled"
    assert write(db, job.id, OWNER) is False
    assert snapshot(db, job.id) == before


@pytest.mark.parametrize("write", WORKER_WRITES, ids=WRITE_IDS)
def test_worker_writes_refused_after_delete(db: Database, write: Callable[..., bool]) -> None:
    job = claimed(db)
    repository.delete_job(db, job.id)
    assert write(db, job.id, OWNER) is False
    assert repository.get_job(db, job.id) is None  # nothing resurrected it


@pytest.mark.parametrize("write", WORKER_WRITES, ids=WRITE_IDS)
def test_worker_writes_refused_on_a_queued_job(db: Database, write: Callable[..., bool]) -> None:
    """A lease that expired and was requeued is no longer the old owner's."""
    job = claimed(db)
    patch_job(db, job.id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert repository.expire_leases(db) == [(job.id, JobStatus.queued)]
    before = snapshot(db, job.id)
    assert write(db, job.id, OWNER) is False
    assert snapshot(db, job.id) == before


def test_renew_lease_extends_without_bumping_version(db: Database) -> None:
    job = claimed(db)
    old = row(db, job.id)
    assert repository.renew_lease(db, job.id, owner=OWNER, lease_seconds=300)
    new = row(db, job.id)
    assert new.lease_expires_at is not None
    assert old.lease_expires_at is not None
    assert new.lease_expires_at > old.lease_expires_at
    assert close_to(new.lease_expires_at, utcnow() + timedelta(seconds=300))
    # The public body does not change, so neither does the ETag: long-polls do not wake on heartbeats.
    assert new.version == old.version


def test_set_progress_clamps_keeps_message_and_renews(db: Database) -> None:
    job = claimed(db)
    assert repository.set_progress(db, job.id, owner=OWNER, progress=0.25, message="a", lease_seconds=100)
    got = row(db, job.id)
    assert (got.progress, got.message, got.version) == (0.25, "a", 3)
    assert got.lease_expires_at is not None
    assert close_to(got.lease_expires_at, utcnow() + timedelta(seconds=100))
    assert repository.set_progress(db, job.id, owner=OWNER, progress=7.0, message=None, lease_seconds=100)
    got = row(db, job.id)
    assert (got.progress, got.message) == (1.0, "a")  # clamped; a None message keeps the last one
    assert repository.set_progress(db, job.id, owner=OWNER, progress=-1, message="x" * 5000, lease_seconds=1)
    got = row(db, job.id)
    assert got.progress == 0.0
    assert got.message == "x" * 1000


def test_finish_succeeded_records_result_and_clears_lease(db: Database) -> None:
    job = claimed(db)
    assert repository.finish_succeeded(
        db,
        job.id,
        owner=OWNER,
        result={"n": 1},
        output_key=f"outputs/{job.id}/1/out.txt",
        output_name="out.txt",
        output_content_type="text/plain",
    )
    got = row(db, job.id)
    assert got.status == "succeeded"
    assert got.result == {"n": 1}
    assert (got.output_key, got.output_name, got.output_content_type) == (
        f"outputs/{job.id}/1/out.txt",
        "out.txt",
        "text/plain",
    )
    assert got.progress == 1.0
    assert got.finished_at is not None
    assert (got.lease_owner, got.lease_expires_at) == (None, None)


def test_finish_succeeded_after_a_failed_attempt_clears_the_error(db: Database) -> None:
    job = claimed(db)
    repository.finish_failed(db, job.id, owner=OWNER, code="flaky", message="m", retryable=True, backoff=0)
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=30) is not None
    assert _succeed(db, job.id, OWNER)
    got = row(db, job.id)
    assert got.status == "succeeded"
    assert (got.error_code, got.error_message) == (None, None)


def test_finish_failed_retryable_with_attempts_left_requeues_after_backoff(db: Database) -> None:
    job = claimed(db, max_attempts=3)
    before = utcnow()
    outcome = repository.finish_failed(
        db, job.id, owner=OWNER, code="busy", message="try later", retryable=True, backoff=30
    )
    assert outcome.owned
    assert outcome.status is JobStatus.queued
    assert outcome.run_after is not None
    assert close_to(outcome.run_after, before + timedelta(seconds=30))
    got = row(db, job.id)
    assert got.status == "queued"
    assert got.run_after == outcome.run_after
    assert got.attempts == 1
    assert (got.error_code, got.error_message) == ("busy", "try later")
    assert got.message == "retrying: busy"
    assert (got.lease_owner, got.lease_expires_at, got.finished_at) == (None, None, None)
    # Not claimable before its backoff has passed, and not listed as due.
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is None
    assert job.id not in repository.due_job_ids(db)


def test_finish_failed_retryable_with_attempts_spent_fails(db: Database) -> None:
    job = claimed(db, max_attempts=2)
    assert _fail_retryable(db, job.id, OWNER)
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is not None  # attempt 2
    outcome = repository.finish_failed(
        db, job.id, owner=OWNER, code="busy", message="still", retryable=True, backoff=0
    )
    assert outcome.owned
    assert outcome.status is JobStatus.failed
    assert outcome.run_after is None
    got = row(db, job.id)
    assert (got.status, got.attempts, got.error_code, got.error_message) == ("failed", 2, "busy", "still")
    assert got.finished_at is not None


def test_finish_failed_not_retryable_fails_at_once(db: Database) -> None:
    job = claimed(db, max_attempts=5)
    outcome = repository.finish_failed(
        db, job.id, owner=OWNER, code="c" * 500, message="m" * 5000, retryable=False, backoff=0
    )
    assert outcome.status is JobStatus.failed
    got = row(db, job.id)
    assert got.status == "failed"
    assert got.attempts == 1
    assert got.error_code == "c" * 100
    assert got.error_message == "m" * 2000


def test_finish_failed_for_unknown_job(db: Database) -> None:
    outcome = repository.finish_failed(
        db, str(uuid.uuid4()), owner=OWNER, code="c", message="m", retryable=True, backoff=0
    )
    assert outcome == repository.FailOutcome(owned=False)


def test_release_job_gives_the_attempt_back(db: Database) -> None:
    job = claimed(db)
    assert row(db, job.id).attempts == 1
    assert repository.release_job(db, job.id, owner=OWNER)
    got = row(db, job.id)
    assert got.status == "queued"
    assert got.attempts == 0
    assert (got.lease_owner, got.lease_expires_at) == (None, None)
    assert got.run_after <= utcnow()
    assert got.progress == 0.0
    assert job.id in repository.due_job_ids(db)
    again = repository.claim_job(db, job.id, owner=OTHER, lease_seconds=5)
    assert again is not None
    assert again.attempts == 1


# ---- client actions -------------------------------------------------------------------------


def test_cancel_queued(db: Database) -> None:
    job = insert(db)
    got = repository.cancel_job(db, job.id)
    assert got.status == "cancelled"
    assert got.finished_at is not None
    assert got.message == "cancelled"
    assert got.version == 2
    assert row(db, job.id).status == "cancelled"
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is None


def test_cancel_running_drops_the_lease(db: Database) -> None:
    job = claimed(db)
    got = repository.cancel_job(db, job.id)
    assert got.status == "cancelled"
    assert (got.lease_owner, got.lease_expires_at) == (None, None)
    assert got.attempts == 1


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_terminal_is_a_conflict(db: Database, status: str) -> None:
    job = insert(db, status=status)
    before = snapshot(db, job.id)
    with pytest.raises(Conflict) as info:
        repository.cancel_job(db, job.id)
    assert info.value.status == 409
    assert info.value.extra["status_of_job"] == status
    assert snapshot(db, job.id) == before


def test_cancel_unknown_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        repository.cancel_job(db, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        repository.cancel_job(db, "not-an-id")


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_retry_resets_the_job(db: Database, status: str) -> None:
    job = claimed(db, max_attempts=1)
    if status == "failed":
        assert _fail_final(db, job.id, OWNER)
    else:
        repository.cancel_job(db, job.id)
    patch_job(db, job.id, result={"old": True}, output_key="outputs/x", output_name="x")
    got = repository.retry_job(db, job.id, max_attempts=4)
    assert got.status == "queued"
    assert got.attempts == 0
    assert got.max_attempts == 4
    assert (got.error_code, got.error_message, got.result) == (None, None, None)
    assert (got.output_key, got.output_name, got.output_content_type) == (None, None, None)
    assert (got.started_at, got.finished_at, got.message, got.progress) == (None, None, None, 0.0)
    assert got.run_after <= utcnow()
    assert job.id in repository.due_job_ids(db)
    assert repository.claim_job(db, job.id, owner=OWNER, lease_seconds=5) is not None


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_retry_only_from_failed_or_cancelled(db: Database, status: str) -> None:
    job = claimed(db) if status == "running" else insert(db, status=status)
    before = snapshot(db, job.id)
    with pytest.raises(Conflict) as info:
        repository.retry_job(db, job.id, max_attempts=3)
    assert info.value.status == 409
    assert snapshot(db, job.id) == before


def test_retry_unknown_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        repository.retry_job(db, str(uuid.uuid4()), max_attempts=3)


@pytest.mark.parametrize("status", ["queued", "running", "succeeded", "failed", "cancelled"])
def test_delete_job(db: Database, status: str) -> None:
    job = claimed(db) if status == "running" else insert(db, status=status)
    keep = insert(db)
    deleted = repository.delete_job(db, job.id)
    assert deleted.id == job.id
    assert deleted.status == status
    assert repository.get_job(db, job.id) is None
    assert not repository.job_exists(db, job.id)
    assert repository.get_job(db, keep.id) is not None
    with pytest.raises(NotFound):
        repository.delete_job(db, job.id)


# ---- terminal statuses never move -----------------------------------------------------------


def _make_terminal(db: Database, status: str) -> Job:
    job = claimed(db, max_attempts=1)
    if status == "succeeded":
        assert _succeed(db, job.id, OWNER)
    elif status == "failed":
        assert _fail_retryable(db, job.id, OWNER)  # attempts spent → failed
    else:
        repository.cancel_job(db, job.id)
    assert row(db, job.id).status == status
    return job


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_terminal_status_is_never_changed_by_worker_functions(db: Database, status: str) -> None:
    job = _make_terminal(db, status)
    # Give the row an expired lease, as a confused worker or sweeper might believe it still had.
    patch_job(db, job.id, lease_owner=OWNER, lease_expires_at=utcnow() - timedelta(hours=1))
    before = snapshot(db, job.id)
    for owner in (OWNER, OTHER):
        for write in WORKER_WRITES:
            assert write(db, job.id, owner) is False
        assert repository.claim_job(db, job.id, owner=owner, lease_seconds=5) is None
    assert repository.expire_leases(db, now=utcnow() + timedelta(days=1)) == []
    assert snapshot(db, job.id) == before


def test_finish_after_cancel_does_nothing(db: Database) -> None:
    job = claimed(db)
    repository.cancel_job(db, job.id)
    assert not _succeed(db, job.id, OWNER)
    assert not _fail_retryable(db, job.id, OWNER)
    assert not _release(db, job.id, OWNER)
    got = row(db, job.id)
    assert got.status == "cancelled"
    assert got.result is None
    assert got.error_code is None


# ---- version --------------------------------------------------------------------------------


def test_version_increments_on_every_change(db: Database) -> None:
    job = insert(db, max_attempts=5)
    seen = [row(db, job.id)]

    def step(action: Callable[[], Any]) -> None:
        action()
        current = row(db, job.id)
        assert current.version == seen[-1].version + 1, action
        assert current.updated_at >= seen[-1].updated_at
        seen.append(current)

    step(lambda: repository.claim_job(db, job.id, owner=OWNER, lease_seconds=30))
    step(lambda: _progress(db, job.id, OWNER))
    step(lambda: _fail_retryable(db, job.id, OWNER))
    step(lambda: repository.claim_job(db, job.id, owner=OWNER, lease_seconds=30))
    step(lambda: _release(db, job.id, OWNER))
    step(lambda: repository.claim_job(db, job.id, owner=OWNER, lease_seconds=30))
    step(lambda: _succeed(db, job.id, OWNER))
    patch_job(db, job.id, status="failed")
    seen.append(row(db, job.id))
    step(lambda: repository.retry_job(db, job.id, max_attempts=3))
    step(lambda: repository.cancel_job(db, job.id))
    step(lambda: repository.retry_job(db, job.id, max_attempts=3))
    step(lambda: repository.claim_job(db, job.id, owner=OWNER, lease_seconds=30))
    patch_job(db, job.id, lease_expires_at=utcnow() - timedelta(seconds=1))
    seen.append(row(db, job.id))
    step(lambda: repository.expire_leases(db))
    assert seen[-1].version == 13


# ---- listing --------------------------------------------------------------------------------

STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
PROCESSORS = ["inspect", "upper", "sleep"]


@pytest.fixture(scope="module")
def listing(migrated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, list[Job]]]:
    """1000 rows inserted in one transaction, statuses and processors interleaved; shared by the
    read-only listing tests."""
    database = open_copy(migrated, tmp_path_factory.mktemp("listing") / "jobs.db")
    jobs = [
        make_job(status=status, processor=processor)
        for status, processor in itertools.islice(
            zip(itertools.cycle(STATUSES), itertools.cycle(PROCESSORS), strict=False), 1000
        )
    ]
    with database.write() as session:
        session.add_all(jobs)
    yield database, jobs
    database.dispose()


@pytest.fixture
def many(listing: tuple[Database, list[Job]]) -> list[Job]:
    return listing[1]


@pytest.fixture
def listed(listing: tuple[Database, list[Job]]) -> Database:
    return listing[0]


def page_through(db: Database, *, limit: int, **filters: Any) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        items, cursor = repository.list_jobs(db, limit=limit, cursor=cursor, **filters)
        pages += 1
        assert len(items) <= limit
        if cursor is not None:
            assert len(items) == limit  # only a full page can have a next one
        ids.extend(job.id for job in items)
        if cursor is None:
            return ids, pages
        assert pages < 10_000


@pytest.mark.parametrize("limit", [1, 37, 50, 200, 1000, 5000])
def test_list_pages_newest_first_without_gaps_or_duplicates(
    listed: Database, many: list[Job], limit: int
) -> None:
    db = listed
    if limit == 1:
        # One row per page is slow across all 1000; check the first pages and the tail instead.
        items, cursor = repository.list_jobs(db, limit=1)
        assert [j.id for j in items] == [many[-1].id]
        items, cursor = repository.list_jobs(db, limit=1, cursor=cursor)
        assert [j.id for j in items] == [many[-2].id]
        last, end = repository.list_jobs(db, limit=1, cursor=repository.encode_cursor(many[1].id))
        assert [j.id for j in last] == [many[0].id]
        assert end is None
        return
    ids, pages = page_through(db, limit=limit)
    expected = sorted((job.id for job in many), reverse=True)
    assert ids == expected
    assert len(set(ids)) == 1000
    assert pages == -(-1000 // limit)  # no trailing empty page when the last one is exactly full


def test_ids_sort_by_creation(many: list[Job]) -> None:
    ids = [job.id for job in many]
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("status", "processor"),
    [("failed", None), (None, "upper"), ("succeeded", "sleep"), ("running", "inspect")],
)
def test_list_filters_page_correctly(
    listed: Database, many: list[Job], status: str | None, processor: str | None
) -> None:
    db = listed
    expected = sorted(
        (
            job.id
            for job in many
            if (status is None or job.status == status) and (processor is None or job.processor == processor)
        ),
        reverse=True,
    )
    assert expected
    ids, _ = page_through(
        db,
        limit=23,
        status=JobStatus(status) if status else None,
        processor=processor,
    )
    assert ids == expected
    assert len(set(ids)) == len(ids)
    for job_id in ids[:5]:
        got = row(db, job_id)
        assert status is None or got.status == status
        assert processor is None or got.processor == processor


def test_list_filter_with_no_match(listed: Database) -> None:
    assert repository.list_jobs(listed, processor="nothing-like-this") == ([], None)
    assert repository.list_jobs(listed, status=JobStatus.queued, processor="nothing") == ([], None)


def test_list_empty_table(db: Database) -> None:
    assert repository.list_jobs(db) == ([], None)


def test_list_is_stable_while_rows_come_and_go(db: Database) -> None:
    """Rows added after the first page (newer) never show up later; rows deleted from a later
    page just are not there; every other row is listed exactly once."""
    jobs = [make_job() for _ in range(250)]
    with db.write() as session:
        session.add_all(jobs)
    first, cursor = repository.list_jobs(db, limit=100)
    newer = insert(db)
    gone = jobs[10]  # on the last page
    repository.delete_job(db, gone.id)
    ids = [job.id for job in first]
    while cursor is not None:
        items, cursor = repository.list_jobs(db, limit=100, cursor=cursor)
        ids.extend(job.id for job in items)
    assert newer.id not in ids
    assert ids == sorted((job.id for job in jobs if job.id != gone.id), reverse=True)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        "%%%%",
        base64.urlsafe_b64encode(b"not an id").decode(),
        base64.urlsafe_b64encode(str(uuid.uuid4()).encode()).decode(),  # a v4 uuid: never issued
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
def test_bad_cursor_is_a_bad_request(db: Database, cursor: str) -> None:
    with pytest.raises(BadRequest) as info:
        repository.list_jobs(db, cursor=cursor)
    assert info.value.status == 400


def test_cursor_round_trip(db: Database) -> None:
    job = insert(db)
    assert repository.decode_cursor(repository.encode_cursor(job.id)) == job.id
    assert "=" not in repository.encode_cursor(job.id)


# ---- sweeper queries ------------------------------------------------------------------------


def test_expire_leases_requeues_or_fails(db: Database) -> None:
    now = utcnow()
    spare = claimed(db, max_attempts=3)
    spent = claimed(db, max_attempts=1)
    alive = claimed(db)
    patch_job(db, spare.id, lease_expires_at=now - timedelta(seconds=1))
    patch_job(db, spent.id, lease_expires_at=now - timedelta(seconds=1))
    moved = dict(repository.expire_leases(db, now=now))
    assert moved == {spare.id: JobStatus.queued, spent.id: JobStatus.failed}

    got = row(db, spare.id)
    assert got.status == "queued"
    assert got.attempts == 1
    assert got.error_code == "worker_lost"
    assert (got.lease_owner, got.lease_expires_at) == (None, None)
    assert got.run_after == now
    assert got.message is not None
    assert "requeued" in got.message
    assert spare.id in repository.due_job_ids(db)

    got = row(db, spent.id)
    assert got.status == "failed"
    assert got.error_code == "worker_lost"
    assert got.finished_at == now

    got = row(db, alive.id)
    assert (got.status, got.lease_owner) == ("running", OWNER)
    # A second pass finds nothing more to do.
    assert repository.expire_leases(db, now=now) == []


def test_expired_lease_owner_cannot_finish_after_requeue_and_reclaim(db: Database) -> None:
    job = claimed(db, owner=OWNER)
    patch_job(db, job.id, lease_expires_at=utcnow() - timedelta(seconds=1))
    repository.expire_leases(db)
    assert repository.claim_job(db, job.id, owner=OTHER, lease_seconds=30) is not None
    assert not _succeed(db, job.id, OWNER)  # the old owner woke up too late
    assert _succeed(db, job.id, OTHER)
    assert row(db, job.id).attempts == 2


def test_retention_queries(db: Database) -> None:
    now = utcnow()
    old = now - timedelta(days=10)
    cutoff = now - timedelta(days=7)
    old_finished = [insert(db, status=s, finished_at=old) for s in ("succeeded", "failed", "cancelled")]
    recent = insert(db, status="succeeded", finished_at=now - timedelta(days=1))
    queued_old = insert(db, created_at=old, finished_at=old)  # finished_at set by accident: still queued
    running = claimed(db)

    listed = {job.id for job in repository.expired_jobs(db, cutoff=cutoff)}
    assert listed == {job.id for job in old_finished}
    assert len(repository.expired_jobs(db, cutoff=cutoff, limit=2)) == 2

    for job in old_finished:
        assert repository.delete_if_finished(db, job.id, cutoff=cutoff)
        assert repository.get_job(db, job.id) is None
        assert not repository.delete_if_finished(db, job.id, cutoff=cutoff)
    for job in (recent, queued_old, running):
        assert not repository.delete_if_finished(db, job.id, cutoff=cutoff)
        assert repository.get_job(db, job.id) is not None


def test_delete_if_finished_respects_a_retry_in_between(db: Database) -> None:
    """The sweeper lists, then deletes: a retry between the two keeps the job."""
    cutoff = utcnow() - timedelta(days=7)
    job = insert(db, status="failed", finished_at=utcnow() - timedelta(days=30))
    assert [j.id for j in repository.expired_jobs(db, cutoff=cutoff)] == [job.id]
    repository.retry_job(db, job.id, max_attempts=3)
    assert not repository.delete_if_finished(db, job.id, cutoff=cutoff)
    assert row(db, job.id).status == "queued"
