"""The job status machine, explored by hypothesis through the real repository functions.

A :class:`~hypothesis.stateful.RuleBasedStateMachine` keeps a few job rows (of two tenants) in a
real, migrated database (SQLite: a fresh copy of a migrated file per example; PostgreSQL when it is
reachable: one database, emptied before each example) and drives them the way workers, the
sweeper and clients do: claims by several workers, lease renewals and progress, success, retryable
and final failures (with or without a backoff to wait out), releases at shutdown, leases that run
out (one job's, every job's when the clock jumps, or a dead worker's), cancels, retries and deletes
by the job's tenant, by another tenant and without one, plus a claim race between the threads of a
worker and a cancel racing a final failure. Each worker write is made by the job's current lease
owner, by a stale one (a previous attempt's owner, after an expiry, a cancel or a release) or by a
stranger (another job's owner).

A model says what each row must be; after every step:

- the row's status, attempts, attempt budget, lease owner and version equal the model's;
- a running job has exactly one lease owner and a lease; no other status has either;
- a running job never counts more attempts than its budget; a queued one always has one left;
- every successful change bumps ``version`` (a lease renewal is not a visible change: it keeps
  it); a write that is refused leaves the row exactly as it was, and so does every other row;
- only the owner's writes succeed: the others get ``None`` / ``False`` / ``owned=False``; only the
  job's tenant (or no tenant) may cancel, retry or delete it (another gets 404);
- a terminal status (succeeded, failed, cancelled) moves only through retry (or delete);
- running → queued only through a retryable failure with attempts left, a release, or an expired
  lease with attempts left.

The run must also have walked every edge of the README's status diagram. Examples are
derandomized (the same every run, in CI too: a failure reproduces) and bounded: 150 examples on
SQLite and 100 on PostgreSQL, of up to 30 steps each.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from filejobs.db import Database
from filejobs.errors import Conflict, NotFound
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.models import Job, JobStatus, utcnow
from filejobs.settings import Settings
from tests.jobs.helpers import make_job, patch_job
from tests.services import POSTGRES_ADMIN_URL, fresh_postgres_database

QUEUED, RUNNING = JobStatus.queued, JobStatus.running
SUCCEEDED, FAILED, CANCELLED = JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

WORKERS = ("w1", "w2", "w3")
#: The API keys jobs belong to (``jobs.owner``): a client sees only its own.
TENANTS = ("key-a", "key-b")
#: Leases are long: only the rules that move time (or kill an owner) make one run out.
LEASE_SECONDS = 60.0
#: A backoff the test never waits for: such a job stays queued until ``backoff_passes``.
LONG_BACKOFF = 3600.0
MAX_JOBS = 5

#: Which action may move a job from one status to another (everything else is a bug).
ALLOWED: dict[tuple[JobStatus, JobStatus], frozenset[str]] = {
    (QUEUED, RUNNING): frozenset({"claim"}),
    (QUEUED, CANCELLED): frozenset({"cancel"}),
    (RUNNING, SUCCEEDED): frozenset({"succeed"}),
    (RUNNING, FAILED): frozenset({"fail", "expire"}),
    (RUNNING, CANCELLED): frozenset({"cancel"}),
    (RUNNING, QUEUED): frozenset({"fail", "release", "expire"}),
    (FAILED, QUEUED): frozenset({"retry"}),
    (CANCELLED, QUEUED): frozenset({"retry"}),
}

EXAMPLES = settings(
    max_examples=150,
    stateful_step_count=30,
    derandomize=True,  # the same examples on every run and in CI: a failure reproduces
    database=None,  # nothing written under .hypothesis/
    deadline=None,  # a database write may take a few ms on a loaded machine; not a property
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)


# ---- a database per example -------------------------------------------------------------------


class SqliteDatabases:
    """A migrated SQLite file, copied for each example (migrating each time is slow)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.template = root / "template.db"
        upgrade(f"sqlite:///{self.template}")
        self._count = itertools.count()

    def open(self) -> tuple[Database, Callable[[], None]]:
        path = self.root / f"example-{next(self._count)}.db"
        shutil.copyfile(self.template, path)
        db = Database(f"sqlite:///{path}")

        def close() -> None:
            db.dispose()
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)

        return db, close


class PostgresDatabases:
    """One migrated PostgreSQL database, emptied before each example.

    A database per example (``CREATE DATABASE … TEMPLATE``) costs 0.3-0.5 s here, more than an
    example's 30 steps; ``TRUNCATE`` gives the same isolation in milliseconds. Commits do not wait
    for the WAL flush (``synchronous_commit=off``, a durability setting: locking, visibility and
    every conditional UPDATE behave the same), which makes each step a few times faster.
    """

    def __init__(self, url: str) -> None:
        name = make_url(url).database
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        resolved = Settings(database_url=url).resolved_database_url
        upgrade(resolved)
        self.db = Database(resolved)

    def open(self) -> tuple[Database, Callable[[], None]]:
        with self.db.write() as session:
            session.execute(text("TRUNCATE jobs"))
        return self.db, lambda: None

    def close(self) -> None:
        self.db.dispose()


Databases = SqliteDatabases | PostgresDatabases


# ---- the model --------------------------------------------------------------------------------


@dataclass
class Expected:
    """What one job row must be."""

    status: JobStatus
    max_attempts: int
    tenant: str  # the API key that made it (``jobs.owner``)
    attempts: int = 0
    owner: str | None = None  # the lease owner while running
    stale: list[str] = field(default_factory=list)  # owners of its earlier attempts, newest last
    version: int = 1
    due: bool = True  # queued and past its backoff (claimable)

    def lose_owner(self) -> None:
        if self.owner is not None:
            self.stale.append(self.owner)
        self.owner = None


def is_running(expected: Expected) -> bool:
    return expected.status == RUNNING


def is_claimable(expected: Expected) -> bool:
    return expected.status == QUEUED and expected.due


Rows = dict[str, dict[str, Any]]
JOBS = Job.__table__  # type: ignore[attr-defined]


class JobStatusMachine(RuleBasedStateMachine):
    """Subclassed per database kind with ``databases`` set (see the tests at the bottom)."""

    databases: ClassVar[Databases]
    #: What the examples did, over all of them (printed by the tests).
    seen: ClassVar[Counter[str]]

    def __init__(self) -> None:
        super().__init__()
        self.db, self._close = self.databases.open()
        self.model: dict[str, Expected] = {}  # every job ever made; deleted ones are in `deleted`
        self.deleted: set[str] = set()
        self._serial = itertools.count()
        self._fresh: Rows | None = None

    def teardown(self) -> None:
        self._close()

    # ---- helpers ----------------------------------------------------------------------------

    def rows(self) -> Rows:
        """Every row of the table, as plain dicts (one Core query: no ORM objects)."""
        with self.db.read() as session:
            found = session.execute(select(JOBS)).mappings().all()
        self._fresh = {row["id"]: dict(row) for row in found}
        return dict(self._fresh)

    def snapshot(self) -> Rows:
        """The rows as last read, when nothing has written since (every write below is followed by
        a read or forgets the cache), else read now. Saves a query per step."""
        return dict(self._fresh) if self._fresh is not None else self.rows()

    def patch(self, job_id: str, **values: Any) -> None:
        """A direct edit, as the passing of time leaves the row (no version bump)."""
        patch_job(self.db, job_id, **values)
        self._fresh = None

    def new_owner(self, worker: str) -> str:
        """A lease owner as a worker makes one: ``host:pid:random:n``, unique per claim."""
        return f"faults:{1000 + WORKERS.index(worker)}:{worker}:{next(self._serial)}"

    def writer(self, job_id: str, who: str) -> str:
        """The lease owner a write is made as: the job's current owner, one of its stale owners, or
        a stranger (another running job's owner, or one nobody ever had)."""
        expected = self.model[job_id]
        if who == "owner" and expected.owner is not None:
            return expected.owner
        if who == "stale" and expected.stale:
            return expected.stale[-1]
        others = [e.owner for i, e in self.model.items() if i != job_id and e.owner is not None]
        return others[0] if others else "faults:9999:nobody:0"

    def owns(self, job_id: str, owner: str) -> bool:
        expected = self.model.get(job_id)
        return job_id not in self.deleted and expected is not None and expected.owner == owner

    def check_step(
        self, action: str, before: Rows, after: Rows, *, changed: set[str], bumped: bool = True
    ) -> None:
        """The transition rules, for every job, between two snapshots around one action.

        ``changed``: the jobs the action was expected to change (each must have changed, bumping
        its version unless ``bumped`` is false); every other row must be exactly as it was.
        """
        self.seen[f"{action}: {'changed' if changed else 'refused / nothing to do'}"] += 1
        for job_id in set(before) | set(after):
            old, new = before.get(job_id), after.get(job_id)
            assert old is not None, f"{action}: job {job_id} appeared from nowhere"
            if new is None:
                assert action == "delete", f"{action}: job {job_id} vanished"
                assert job_id in changed, f"{action}: job {job_id} was deleted unexpectedly"
                continue
            if job_id not in changed:
                assert new == old, f"{action}: job {job_id} changed though it should not have"
                continue
            before_status, after_status = JobStatus(old["status"]), JobStatus(new["status"])
            if bumped:
                assert new["version"] > old["version"], f"{action}: version not bumped on {job_id}"
            else:
                assert new["version"] == old["version"], f"{action}: version moved on {job_id}"
            if before_status in TERMINAL:
                assert action == "retry", f"{action} moved terminal job {job_id} ({before_status})"
            if before_status != after_status:
                self.seen[f"{before_status} -> {after_status} by {action}"] += 1
                allowed = ALLOWED.get((before_status, after_status), frozenset())
                assert action in allowed, f"{action}: {before_status} → {after_status} is not allowed"
            if (before_status, after_status) == (RUNNING, QUEUED) and action != "release":
                assert old["attempts"] < old["max_attempts"], f"{action} requeued a job with no attempts left"

    # ---- setup ------------------------------------------------------------------------------

    def insert(self, max_attempts: int) -> str:
        tenant = TENANTS[len(self.model) % len(TENANTS)]
        job = repository.insert_job(self.db, make_job(max_attempts=max_attempts, owner=tenant))
        self._fresh = None
        self.model[job.id] = Expected(
            status=QUEUED, max_attempts=max_attempts, tenant=tenant, version=job.version
        )
        return job.id

    @initialize(budgets=st.lists(st.integers(1, 3), min_size=3, max_size=3))
    def seed(self, budgets: list[int]) -> None:
        for budget in budgets:
            self.insert(budget)

    @precondition(lambda self: len(self.model) - len(self.deleted) < MAX_JOBS)
    @rule(budget=st.integers(1, 3))
    def add_job(self, budget: int) -> None:
        self.insert(budget)

    def pick(self, data: st.DataObject, fitting: Callable[[Expected], bool]) -> str:
        """The job a rule acts on: mostly one it fits (``fitting``), sometimes any job ever made,
        deleted ones too, so that refusals are exercised as well. In creation order: the same
        choices on every run."""
        alive = self.alive(fitting)
        if alive and data.draw(st.integers(0, 3), label="fitting") > 0:
            return data.draw(st.sampled_from(alive), label="job")
        return data.draw(st.sampled_from(list(self.model)), label="job")

    # ---- the worker's side ------------------------------------------------------------------

    @precondition(lambda self: self.alive(is_claimable))
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def claim(self, data: st.DataObject, worker: str) -> None:
        job_id = self.pick(data, is_claimable)
        owner = self.new_owner(worker)
        before = self.snapshot()
        got = repository.claim_job(self.db, job_id, owner=owner, lease_seconds=LEASE_SECONDS)
        after = self.rows()
        expected = self.model[job_id]
        claimable = job_id not in self.deleted and expected.status == QUEUED and expected.due
        if not claimable:
            assert got is None, f"claimed a {expected.status} job (due={expected.due})"
            self.check_step("claim", before, after, changed=set())
            return
        assert got is not None, "a queued, due job could not be claimed"
        stored = after[job_id]
        claimed = (stored["status"], stored["lease_owner"], stored["attempts"])
        assert claimed == (RUNNING, owner, expected.attempts + 1)
        assert (got.id, got.attempts) == (job_id, expected.attempts + 1)  # what the runner was given
        self.check_step("claim", before, after, changed={job_id})
        expected.status, expected.owner = RUNNING, owner
        expected.attempts += 1
        expected.version = after[job_id]["version"]

    @precondition(lambda self: self.alive(is_claimable))
    @rule(data=st.data(), worker=st.sampled_from(WORKERS), threads=st.integers(2, 3))
    def claim_race(self, data: st.DataObject, worker: str, threads: int) -> None:
        """The threads of a worker (or one message delivered several times) claim the same job at
        the same moment: at most one wins. (One worker, so that which thread wins changes nothing
        the next steps draw from: hypothesis needs a run to be repeatable.)"""
        job_id = self.pick(data, is_claimable)
        owners = [self.new_owner(worker) for _ in range(threads)]
        start = threading.Barrier(len(owners))

        def claim(owner: str) -> repository.Claimed | None:
            start.wait(timeout=10)
            return repository.claim_job(self.db, job_id, owner=owner, lease_seconds=LEASE_SECONDS)

        before = self.snapshot()
        with ThreadPoolExecutor(len(owners)) as pool:
            results = list(pool.map(claim, owners))
        after = self.rows()
        winners = [owner for owner, got in zip(owners, results, strict=True) if got is not None]
        expected = self.model[job_id]
        if job_id in self.deleted or expected.status != QUEUED or not expected.due:
            assert winners == [], f"a {expected.status} job was claimed by {winners}"
            self.check_step("claim", before, after, changed=set())
            return
        assert len(winners) == 1, f"{len(winners)} workers won one claim: {winners}"
        self.check_step("claim", before, after, changed={job_id})
        assert after[job_id]["lease_owner"] == winners[0]
        expected.status, expected.owner = RUNNING, winners[0]
        expected.attempts += 1
        expected.version = after[job_id]["version"]

    WHO = st.sampled_from(["owner", "owner", "stale", "stranger"])

    @precondition(lambda self: self.running())
    @rule(data=st.data(), who=WHO)
    def renew(self, data: st.DataObject, who: str) -> None:
        job_id = self.pick(data, is_running)
        owner = self.writer(job_id, who)
        before = self.snapshot()
        renewed = repository.renew_lease(self.db, job_id, owner=owner, lease_seconds=LEASE_SECONDS)
        after = self.rows()
        assert renewed == self.owns(job_id, owner), f"renew by {who}: {renewed}"
        self.check_step("renew", before, after, changed={job_id} if renewed else set(), bumped=False)
        if renewed:
            assert after[job_id]["lease_expires_at"] >= before[job_id]["lease_expires_at"]

    @precondition(lambda self: self.running())
    @rule(data=st.data(), who=WHO, fraction=st.floats(-0.5, 1.5, allow_nan=False))
    def progress(self, data: st.DataObject, who: str, fraction: float) -> None:
        job_id = self.pick(data, is_running)
        owner = self.writer(job_id, who)
        before = self.snapshot()
        done = repository.set_progress(
            self.db, job_id, owner=owner, progress=fraction, message="step", lease_seconds=LEASE_SECONDS
        )
        after = self.rows()
        assert done == self.owns(job_id, owner), f"progress by {who}: {done}"
        self.check_step("progress", before, after, changed={job_id} if done else set())
        if done:
            assert after[job_id]["progress"] == max(0.0, min(1.0, fraction))
            self.model[job_id].version = after[job_id]["version"]

    @precondition(lambda self: self.running())
    @rule(data=st.data(), who=WHO)
    def succeed(self, data: st.DataObject, who: str) -> None:
        job_id = self.pick(data, is_running)
        owner = self.writer(job_id, who)
        before = self.snapshot()
        done = repository.finish_succeeded(
            self.db,
            job_id,
            owner=owner,
            result={"ok": True},
            output_key=None,
            output_name=None,
            output_content_type=None,
        )
        after = self.rows()
        assert done == self.owns(job_id, owner), f"succeed by {who}: {done}"
        self.check_step("succeed", before, after, changed={job_id} if done else set())
        if done:
            expected = self.model[job_id]
            expected.status = SUCCEEDED
            expected.lose_owner()
            expected.version = after[job_id]["version"]
            assert after[job_id]["result"] == {"ok": True}
            assert after[job_id]["progress"] == 1.0
            assert after[job_id]["error_code"] is None

    @precondition(lambda self: self.running())
    @rule(data=st.data(), who=WHO, retryable=st.booleans(), backoff=st.sampled_from([0.0, 0.0, LONG_BACKOFF]))
    def fail(self, data: st.DataObject, who: str, retryable: bool, backoff: float) -> None:
        job_id = self.pick(data, is_running)
        owner = self.writer(job_id, who)
        before = self.snapshot()
        outcome = repository.finish_failed(
            self.db, job_id, owner=owner, code="oops", message="broke", retryable=retryable, backoff=backoff
        )
        after = self.rows()
        owned = self.owns(job_id, owner)
        assert outcome.owned == owned, f"fail by {who}: {outcome}"
        if not owned:
            assert outcome.status is None
            self.check_step("fail", before, after, changed=set())
            return
        expected = self.model[job_id]
        again = retryable and expected.attempts < expected.max_attempts
        assert outcome.status == (QUEUED if again else FAILED), outcome
        self.check_step("fail", before, after, changed={job_id})
        expected.status = QUEUED if again else FAILED
        expected.due = backoff == 0
        expected.lose_owner()
        expected.version = after[job_id]["version"]
        assert after[job_id]["error_code"] == "oops"

    @precondition(lambda self: self.running())
    @rule(data=st.data(), who=WHO)
    def release(self, data: st.DataObject, who: str) -> None:
        job_id = self.pick(data, is_running)
        owner = self.writer(job_id, who)
        before = self.snapshot()
        done = repository.release_job(self.db, job_id, owner=owner)
        after = self.rows()
        assert done == self.owns(job_id, owner), f"release by {who}: {done}"
        self.check_step("release", before, after, changed={job_id} if done else set())
        if done:
            expected = self.model[job_id]
            expected.status, expected.due = QUEUED, True
            expected.attempts -= 1  # the attempt is given back
            expected.lose_owner()
            expected.version = after[job_id]["version"]

    # ---- time and the sweeper ---------------------------------------------------------------

    def expire(self, moving: set[str], **kwargs: Any) -> None:
        """``expire_leases(**kwargs)``, expecting exactly the running jobs ``moving`` to move."""
        before = self.snapshot()
        moved = repository.expire_leases(self.db, **kwargs)
        after = self.rows()
        want = {}
        for job_id in moving:
            expected = self.model[job_id]
            want[job_id] = QUEUED if expected.attempts < expected.max_attempts else FAILED
        assert dict(moved) == want, f"expire_leases moved {moved}, expected {want}"
        assert len(moved) == len(want), f"a job moved twice: {moved}"
        self.check_step("expire", before, after, changed=set(want))
        for job_id, status in want.items():
            expected = self.model[job_id]
            expected.status, expected.due = status, True
            expected.lose_owner()
            expected.version = after[job_id]["version"]
            assert after[job_id]["error_code"] == "worker_lost"

    def alive(self, fitting: Callable[[Expected], bool]) -> list[str]:
        """The jobs (not deleted) ``fitting`` says yes to, in creation order."""
        return [i for i, e in self.model.items() if i not in self.deleted and fitting(e)]

    def running(self) -> set[str]:
        return set(self.alive(is_running))

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def lease_runs_out(self, data: st.DataObject) -> None:
        """This job's worker stopped renewing: its lease is in the past (the other jobs' are not)."""
        job_id = self.pick(data, is_running)
        moving = set()
        if job_id in self.running():
            self.patch(job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
            moving = {job_id}
        self.expire(moving)

    @precondition(lambda self: self.running())
    @rule()
    def clock_jumps_past_every_lease(self) -> None:
        self.expire(self.running(), now=utcnow() + timedelta(seconds=LEASE_SECONDS + 1))
        # The jump is also the requeued jobs' run_after: by the real clock they are not due yet.
        for job_id, row in self.rows().items():
            if row["status"] == QUEUED:
                self.model[job_id].due = row["run_after"] <= utcnow()

    @precondition(lambda self: self.running())
    @rule(worker=st.sampled_from(WORKERS))
    def owner_dies(self, worker: str) -> None:
        """The sweeper learns that a worker's process is gone: its jobs move at once."""

        def dead(owner: str) -> bool:
            return owner.split(":")[2] == worker

        moving = {i for i in self.running() if dead(self.model[i].owner or "")}
        self.expire(moving, owner_is_dead=dead)

    @precondition(lambda self: self.alive(lambda e: e.status == QUEUED and not e.due))
    @rule(data=st.data())
    def backoff_passes(self, data: st.DataObject) -> None:
        """The time a retry waits goes by (a direct edit of ``run_after``: no version bump)."""
        job_id = self.pick(data, lambda e: e.status == QUEUED and not e.due)
        expected = self.model[job_id]
        if job_id in self.deleted or expected.status != QUEUED or expected.due:
            return
        self.patch(job_id, run_after=utcnow() - timedelta(seconds=1))
        expected.due = True

    # ---- the client's side ------------------------------------------------------------------

    def caller(self, job_id: str, who: str) -> str | None:
        """The tenant a client action is made as: the job's own, another one, or none (an open
        service, or the sweeper: ``owner=None`` sees every job)."""
        if who == "open":
            return None
        tenant = self.model[job_id].tenant
        return tenant if who == "tenant" else next(t for t in TENANTS if t != tenant)

    def refused(self, action: str, job_id: str, call: Callable[[], object], who: str) -> bool:
        """Run a client action that must be refused (404 for a deleted job or another tenant's,
        409 for one in the wrong status); True when it was (the row unchanged)."""
        expected = self.model[job_id]
        fits = {
            "cancel": expected.status not in TERMINAL,
            "retry": expected.status in (FAILED, CANCELLED),
            "delete": True,
        }[action]
        if job_id in self.deleted or who == "other":
            error: type[Exception] = NotFound
        elif not fits:
            error = Conflict
        else:
            return False
        before = self.snapshot()
        with pytest.raises(error):
            call()
        self.check_step(action, before, self.rows(), changed=set())
        self.seen[f"{action}: {error.__name__}"] += 1
        return True

    CALLER = st.sampled_from(["tenant", "tenant", "open", "other"])

    @precondition(lambda self: self.alive(lambda e: e.status not in TERMINAL))
    @rule(data=st.data(), who=CALLER)
    def cancel(self, data: st.DataObject, who: str) -> None:
        job_id = self.pick(data, lambda e: e.status not in TERMINAL)
        owner = self.caller(job_id, who)
        if self.refused("cancel", job_id, lambda: repository.cancel_job(self.db, job_id, owner=owner), who):
            return
        before = self.snapshot()
        job = repository.cancel_job(self.db, job_id, owner=owner)
        after = self.rows()
        assert job.status == CANCELLED
        self.check_step("cancel", before, after, changed={job_id})
        expected = self.model[job_id]
        expected.status = CANCELLED
        expected.lose_owner()
        expected.version = after[job_id]["version"]

    @precondition(lambda self: self.alive(lambda e: e.status in (FAILED, CANCELLED)))
    @rule(data=st.data(), who=CALLER, budget=st.integers(1, 3))
    def retry(self, data: st.DataObject, who: str, budget: int) -> None:
        job_id = self.pick(data, lambda e: e.status in (FAILED, CANCELLED))
        owner = self.caller(job_id, who)

        def call() -> Job:
            return repository.retry_job(self.db, job_id, max_attempts=budget, owner=owner)

        if self.refused("retry", job_id, call, who):
            return
        before = self.snapshot()
        job = call()
        after = self.rows()
        assert (job.status, job.attempts, job.max_attempts) == (QUEUED, 0, budget)
        self.check_step("retry", before, after, changed={job_id})
        assert after[job_id]["error_code"] is None
        assert after[job_id]["result"] is None
        expected = self.model[job_id]
        expected.status, expected.due = QUEUED, True
        expected.attempts, expected.max_attempts = 0, budget
        expected.version = after[job_id]["version"]

    @precondition(lambda self: len(self.deleted) < 2)
    @rule(data=st.data(), who=CALLER)
    def delete(self, data: st.DataObject, who: str) -> None:
        job_id = self.pick(data, lambda e: True)
        owner = self.caller(job_id, who)
        if self.refused("delete", job_id, lambda: repository.delete_job(self.db, job_id, owner=owner), who):
            return
        before = self.snapshot()
        gone = repository.delete_job(self.db, job_id, owner=owner)
        after = self.rows()
        assert gone.id == job_id
        self.check_step("delete", before, after, changed={job_id})
        self.deleted.add(job_id)
        self.model[job_id].lose_owner()

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def cancel_races_failure(self, data: st.DataObject) -> None:
        """A client cancels while the owner records a final failure: exactly one of them wins, and
        the row moves once. (A failure, not a success, so that either outcome leaves a job that can
        be retried: the next steps draw the same way whichever won, as hypothesis needs.)"""
        job_id = self.pick(data, is_running)
        expected = self.model[job_id]
        if job_id in self.deleted or expected.status != RUNNING:
            return
        owner = expected.owner
        assert owner is not None
        start = threading.Barrier(2)

        def finish() -> bool:
            start.wait(timeout=10)
            outcome = repository.finish_failed(
                self.db, job_id, owner=owner, code="final", message="no", retryable=False, backoff=0
            )
            return outcome.owned

        def cancel() -> bool:
            start.wait(timeout=10)
            try:
                repository.cancel_job(self.db, job_id)
            except Conflict:
                return False
            return True

        before = self.snapshot()
        with ThreadPoolExecutor(2) as pool:
            failed, cancelled = pool.submit(finish), pool.submit(cancel)
            won = (failed.result(), cancelled.result())
        after = self.rows()
        assert won in ((True, False), (False, True)), f"fail/cancel outcomes: {won}"
        status = FAILED if won[0] else CANCELLED
        assert after[job_id]["status"] == status
        self.check_step("fail" if won[0] else "cancel", before, after, changed={job_id})
        # One change from running, then a refused one: the row moved exactly once.
        assert after[job_id]["version"] == before[job_id]["version"] + 1
        self.seen[f"race won by {'fail' if won[0] else 'cancel'}"] += 1
        expected.status = status
        expected.lose_owner()
        expected.version = after[job_id]["version"]

    # ---- after every step -------------------------------------------------------------------

    @invariant()
    def rows_match_the_model(self) -> None:
        rows = self.snapshot()  # read after the step's last write
        assert set(rows) == set(self.model) - self.deleted, "rows and model disagree on which jobs exist"
        for job_id, row in rows.items():
            expected = self.model[job_id]
            status = JobStatus(row["status"])
            seen = (status, row["attempts"], row["max_attempts"], row["lease_owner"], row["version"])
            want = (expected.status, expected.attempts, expected.max_attempts, expected.owner)
            want += (expected.version,)
            assert seen == want, f"job {job_id}: (status, attempts, max, owner, version) {seen} != {want}"
            if status == RUNNING:
                assert row["lease_owner"] is not None
                assert row["lease_expires_at"] is not None
                assert 1 <= row["attempts"] <= row["max_attempts"], row
                assert row["finished_at"] is None
            else:
                assert row["lease_owner"] is None, row
                assert row["lease_expires_at"] is None, row
            if status == QUEUED:
                assert 0 <= row["attempts"] < row["max_attempts"], row
                assert row["finished_at"] is None
                if expected.due:
                    assert row["run_after"] <= utcnow(), row
            if status in TERMINAL:
                assert row["finished_at"] is not None, row
            if status == SUCCEEDED:
                assert row["progress"] == 1.0, row
                assert row["error_code"] is None, row
            if status == FAILED:
                assert row["error_code"] is not None, row


# ---- the tests ----------------------------------------------------------------------------------


def run(databases: Databases, examples: int) -> None:
    class Machine(JobStatusMachine):
        pass

    Machine.databases = databases
    Machine.seen = Counter()
    run_state_machine_as_test(Machine, settings=settings(EXAMPLES, max_examples=examples))
    print("steps by outcome and the transitions they made:")
    for what, count in sorted(Machine.seen.items()):
        print(f"  {count:6d}  {what}")
    transitions = {what.split(" by ")[0] for what in Machine.seen if " -> " in what}
    # Every edge of the README's diagram was walked (a run that explores nothing proves nothing).
    assert transitions == {f"{a} -> {b}" for a, b in ALLOWED}, transitions


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the SQLite files live: in memory (tmpfs) when the machine has one. A commit's fsync is
    most of what a step costs on disk, and durability is not what this test is about."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="filejobs-faults-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_status_machine_sqlite(scratch: Path) -> None:
    run(SqliteDatabases(scratch / "sqlite"), examples=150)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def test_status_machine_postgres(postgres_url: str) -> None:
    databases = PostgresDatabases(postgres_url)
    try:
        run(databases, examples=100)
    finally:
        databases.close()
