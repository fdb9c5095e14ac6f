"""The threaded LocalWorker: submit, backoff timers, shutdown with a grace period, change hooks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.local_dispatch import LocalDispatcher
from filejobs.jobs.worker import LocalWorker
from filejobs.models import utcnow
from filejobs.services import Services
from filejobs.testing import submit
from tests.conftest import make_settings
from tests.jobs.helpers import child_pids, patch_job, process_gone, row, wait_for_status, wait_until


class Recorder:
    """An ``on_change`` hook that remembers every call (from any thread)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, job_id: str) -> None:
        with self._lock:
            self.calls.append(job_id)

    def count(self, job_id: str) -> int:
        with self._lock:
            return self.calls.count(job_id)


@pytest.fixture
def pool(services: Services, data_dir: Path) -> Iterator[Callable[..., LocalWorker]]:
    """``pool(threads=1, on_change=None, **settings)`` → a started threaded worker on the test's
    database; every worker made is stopped at the end."""
    made: list[LocalWorker] = []

    def make(
        threads: int = 1, on_change: Callable[[str], None] | None = None, **overrides: Any
    ) -> LocalWorker:
        settings = make_settings(data_dir, **overrides) if overrides else services.settings
        worker = LocalWorker(
            db=services.db,
            storage=services.storage,
            registry=services.registry,
            settings=settings,
            on_change=on_change or services.hub.notify,
            threads=threads,
        )
        worker.start()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop(grace=0)


def test_threaded_worker_runs_submitted_jobs(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    worker = pool(threads=2)
    dispatcher = LocalDispatcher(worker)
    ids = [submit(client, f"file number {i}\n".encode())["id"] for i in range(6)]
    for job_id in ids:
        dispatcher.submit(job_id)
    for job_id in ids:
        job = wait_for_status(services.db, job_id, "succeeded", "failed")
        assert job.status == "succeeded"
        assert job.attempts == 1
        assert job.result is not None
        assert job.result["words"] == 3
    assert len(child_pids()) == 2  # one persistent child per thread
    worker.stop(grace=5)
    assert child_pids() == []


def test_duplicate_submissions_run_the_job_once(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    recorder = Recorder()
    worker = pool(threads=2, on_change=recorder)
    job_id = submit(client, processor="sleep", params={"seconds": 0.3, "steps": 3})["id"]
    for _ in range(5):
        worker.submit(job_id)
    wait_for_status(services.db, job_id, "succeeded")
    worker.stop(grace=5)
    job = row(services.db, job_id)
    assert job.attempts == 1
    assert job.status == "succeeded"


def test_on_change_is_called_for_claim_progress_and_finish(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    recorder = Recorder()
    worker = pool(on_change=recorder)
    job_id = submit(client, processor="sleep", params={"seconds": 0.3, "steps": 3})["id"]
    worker.submit(job_id)
    wait_for_status(services.db, job_id, "succeeded")
    worker.stop(grace=5)  # joins the thread: every call it was going to make has been made
    # claim + 3 progress writes + finish, at least (progress may be coalesced but not here:
    # progress_interval is 0 in the tests)
    assert recorder.count(job_id) >= 5
    assert set(recorder.calls) == {job_id}


def test_hub_wakes_a_long_poll_when_a_worker_changes_the_job(data_dir: Path) -> None:
    settings = make_settings(data_dir, workers=1)
    with TestClient(create_app(settings)) as client:
        job_id = submit(client, processor="sleep", params={"seconds": 1.0, "steps": 2})["id"]
        first = client.get(f"/v1/jobs/{job_id}")
        etag = first.headers["etag"]
        started = time.monotonic()
        changed = client.get(f"/v1/jobs/{job_id}", params={"wait": 20}, headers={"If-None-Match": etag})
        assert time.monotonic() - started < 10
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        services: Services = client.app_state["services"]
        wait_for_status(services.db, job_id, "succeeded")


def test_app_with_a_real_worker_runs_uploads(data_dir: Path) -> None:
    settings = make_settings(data_dir, workers=2)
    with TestClient(create_app(settings)) as client:
        services: Services = client.app_state["services"]
        assert services.worker is not None
        ids = [submit(client, f"{i} {i}\n".encode())["id"] for i in range(4)]
        upper = submit(client, b"abc\n", processor="upper")["id"]
        for job_id in [*ids, upper]:
            assert wait_for_status(services.db, job_id, "succeeded", "failed").status == "succeeded"
        assert client.get(f"/v1/jobs/{upper}/result").content == b"ABC\n"
    assert child_pids() == []  # the lifespan stopped the pool and its children


# ---- backoff --------------------------------------------------------------------------------


def test_backoff_retry_is_scheduled_and_runs(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    backoff = 0.4
    worker = pool(retry_backoff=backoff, retry_backoff_max=backoff)
    job_id = submit(client, processor="flaky", params={"succeed_on": 2})["id"]
    worker.submit(job_id)
    waiting = wait_until(
        lambda: (job := row(services.db, job_id)).status == "queued" and job.attempts == 1 and job,
        timeout=10,
        what="the first attempt to fail into backoff",
    )
    assert waiting.error_code == "flaky"
    assert waiting.run_after > waiting.updated_at
    done = wait_for_status(services.db, job_id, "succeeded", "failed")
    assert done.status == "succeeded"
    assert done.attempts == 2
    assert done.started_at is not None
    # The second attempt was claimed no earlier than the backoff allowed (jitter is ±20 %).
    assert done.started_at >= waiting.run_after
    assert (done.started_at - done.created_at).total_seconds() >= backoff * 0.8


def test_burst_mode_does_not_run_a_job_before_its_backoff(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    settings = make_settings(data_dir, retry_backoff=30.0, retry_backoff_max=30.0)
    worker = LocalWorker(
        db=services.db, storage=services.storage, registry=services.registry, settings=settings, threads=0
    )
    job_id = submit(client, processor="flaky", params={"succeed_on": 2})["id"]
    before = utcnow()
    assert worker.drain() == 1
    after = utcnow()
    job = row(services.db, job_id)
    assert (job.status, job.attempts) == ("queued", 1)
    # The attempt failed between before and after: its backoff, 30 s +- 20 %, counts from then.
    assert before + timedelta(seconds=30 * 0.8) <= job.run_after <= after + timedelta(seconds=30 * 1.2)


def test_submit_at_runs_the_job_when_it_becomes_due(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    worker = pool()
    job_id = submit(client)["id"]
    due = utcnow() + timedelta(seconds=0.5)
    patch_job(services.db, job_id, run_after=due)
    worker.submit(job_id)  # too early: the claim refuses it
    worker.submit_at(job_id, due)
    job = wait_for_status(services.db, job_id, "succeeded", "failed")
    assert job.status == "succeeded"
    assert job.started_at is not None
    assert job.started_at >= due
    assert job.attempts == 1


def test_a_job_submitted_before_it_is_due_runs_when_due(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    worker = pool()
    job_id = submit(client)["id"]
    due = utcnow() + timedelta(seconds=0.5)
    patch_job(services.db, job_id, run_after=due)
    worker.submit(job_id)  # too early: the claim refuses it, and the worker comes back when due
    job = wait_for_status(services.db, job_id, "succeeded", "failed")
    assert job.status == "succeeded"
    assert job.started_at is not None
    assert job.started_at >= due


def test_stop_cancels_pending_timers(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    worker = pool()
    job_id = submit(client)["id"]
    due = utcnow() + timedelta(seconds=120)
    patch_job(services.db, job_id, run_after=due)
    worker.submit_at(job_id, due)
    assert any(isinstance(t, threading.Timer) and t.is_alive() for t in threading.enumerate())
    worker.stop(grace=0)
    # Without the cancel, the timer thread would wait its 120 s out.
    wait_until(
        lambda: not any(isinstance(t, threading.Timer) and t.is_alive() for t in threading.enumerate()),
        timeout=5,
        what="the backoff timer to be cancelled",
    )
    job = row(services.db, job_id)
    assert (job.status, job.attempts) == ("queued", 0)


# ---- shutdown -------------------------------------------------------------------------------


def _wait_running(services: Services, job_id: str) -> None:
    wait_until(
        lambda: (job := row(services.db, job_id)).status == "running" and job.progress > 0,
        timeout=15,
        what="the job to run and report progress",
    )


def test_stop_after_grace_returns_a_running_job_to_the_queue(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    worker = pool()
    job_id = submit(client, processor="sleep", params={"seconds": 30, "steps": 300})["id"]
    worker.submit(job_id)
    _wait_running(services, job_id)
    (pid,) = child_pids()
    assert row(services.db, job_id).attempts == 1
    grace = 0.5
    started = time.monotonic()
    worker.stop(grace=grace)
    elapsed = time.monotonic() - started
    assert grace <= elapsed < grace + 4
    job = row(services.db, job_id)
    assert job.status == "queued"
    assert job.attempts == 0  # the interrupted attempt is given back
    assert (job.lease_owner, job.lease_expires_at) == (None, None)
    assert job.error_code is None
    assert job.run_after <= utcnow()
    assert process_gone(pid)
    assert child_pids() == []


def test_stop_lets_a_short_job_finish_within_grace(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    worker = pool()
    job_id = submit(client, processor="sleep", params={"seconds": 1.0, "steps": 10})["id"]
    worker.submit(job_id)
    _wait_running(services, job_id)
    worker.stop(grace=15)
    job = row(services.db, job_id)
    assert job.status == "succeeded"
    assert job.attempts == 1


def test_stop_leaves_queued_jobs_queued(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    worker = pool(threads=1)
    running = submit(client, processor="sleep", params={"seconds": 30, "steps": 300})["id"]
    worker.submit(running)
    _wait_running(services, running)
    waiting = [submit(client)["id"] for _ in range(3)]
    for job_id in waiting:
        worker.submit(job_id)
    worker.stop(grace=0.2)
    for job_id in [running, *waiting]:
        job = row(services.db, job_id)
        assert (job.status, job.attempts) == ("queued", 0), job_id
    for job_id in waiting:
        assert row(services.db, job_id).started_at is None  # never claimed
    # Submissions after stop are refused; nothing runs them.
    worker.submit(waiting[0])
    assert all(
        not thread.is_alive() for thread in threading.enumerate() if thread.name.startswith("filejobs-worker")
    )
    assert row(services.db, waiting[0]).status == "queued"


def test_jobs_left_queued_at_stop_run_on_the_next_worker(
    client: TestClient, services: Services, pool: Callable[..., LocalWorker]
) -> None:
    first = pool()
    long_job = submit(client, processor="sleep", params={"seconds": 30, "steps": 300})["id"]
    first.submit(long_job)
    _wait_running(services, long_job)
    short = submit(client)["id"]
    first.submit(short)
    first.stop(grace=0)
    assert row(services.db, short).status == "queued"
    # Replace the long job's params so the next worker finishes it quickly.
    patch_job(services.db, long_job, params={"seconds": 0.1, "steps": 1})
    second = pool()
    for job_id in (long_job, short):
        second.submit(job_id)
    for job_id in (long_job, short):
        job = wait_for_status(services.db, job_id, "succeeded", "failed")
        assert job.status == "succeeded"
        assert job.attempts == 1  # the released attempt was not counted


def test_cancel_through_the_app_frees_the_worker(data_dir: Path) -> None:
    """With the real LocalDispatcher the cancel hint reaches the running thread, which stops the
    child and takes the next job."""
    settings = make_settings(data_dir, workers=1)
    with TestClient(create_app(settings)) as client:
        services: Services = client.app_state["services"]
        stubborn = submit(client, processor="sleep", params={"seconds": 30, "steps": 1})["id"]
        wait_for_status(services.db, stubborn, "running")
        cancelled = client.post(f"/v1/jobs/{stubborn}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        started = time.monotonic()
        after = submit(client)["id"]
        assert wait_for_status(services.db, after, "succeeded", "failed").status == "succeeded"
        assert time.monotonic() - started < 10
        assert row(services.db, stubborn).status == "cancelled"
