"""The sweeper: lost leases, stuck queued rows, temp files, orphan uploads, retention, and the
startup pass that recovers a crashed service's jobs."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.sweeper import SweepReport, sweep
from filejobs.jobs.worker import LocalWorker
from filejobs.models import utcnow
from filejobs.services import Services
from filejobs.settings import Settings
from filejobs.testing import submit
from tests.conftest import files_under, make_settings
from tests.jobs.helpers import patch_job, row, wait_for_status
from tests.uploads.helpers import kept_in_database, stored_content

#: A lease owner on no host of ours: only the lease's expiry can free its jobs.
GHOST = "ghost-host:1:dead00:0"


def run_sweep(
    services: Services, settings: Settings | None = None, **kwargs: Any
) -> tuple[SweepReport, InMemoryDispatcher]:
    dispatcher = InMemoryDispatcher()
    report = sweep(
        db=services.db,
        storage=services.storage,
        settings=settings or services.settings,
        dispatcher=dispatcher,
        **kwargs,
    )
    return report, dispatcher


def claim_as_ghost(services: Services, job_id: str) -> None:
    assert repository.claim_job(services.db, job_id, owner=GHOST, lease_seconds=60) is not None


def age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


# ---- leases and dispatch --------------------------------------------------------------------


def test_expired_lease_is_requeued_and_dispatched(
    client: TestClient, services: Services, worker: LocalWorker
) -> None:
    job_id = submit(client)["id"]
    claim_as_ghost(services, job_id)
    patch_job(services.db, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))

    report, dispatcher = run_sweep(services)
    assert (report.requeued, report.failed) == (1, 0)
    assert dispatcher.submitted == [job_id]
    assert report.dispatched == 1
    job = row(services.db, job_id)
    assert job.status == "queued"
    assert job.error_code == "worker_lost"
    assert job.lease_owner is None
    assert job.attempts == 1

    assert worker.drain() == 1
    done = row(services.db, job_id)
    assert done.status == "succeeded"
    assert done.attempts == 2
    assert done.error_code is None


def test_expired_lease_with_attempts_spent_fails(
    client: TestClient, services: Services, settings: Settings
) -> None:
    job_id = submit(client)["id"]
    claim_as_ghost(services, job_id)
    patch_job(
        services.db,
        job_id,
        attempts=settings.max_attempts,
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )
    report, dispatcher = run_sweep(services)
    assert (report.requeued, report.failed) == (0, 1)
    assert dispatcher.submitted == []
    job = row(services.db, job_id)
    assert job.status == "failed"
    assert job.error_code == "worker_lost"
    assert job.finished_at is not None
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["error"]["code"] == "worker_lost"


def test_live_lease_is_left_alone(client: TestClient, services: Services) -> None:
    job_id = submit(client)["id"]
    claim_as_ghost(services, job_id)
    before = row(services.db, job_id)
    report, dispatcher = run_sweep(services)
    assert (report.requeued, report.failed, report.dispatched) == (0, 0, 0)
    assert dispatcher.submitted == []
    assert row(services.db, job_id).model_dump() == before.model_dump()


def test_due_queued_rows_are_dispatched_oldest_first(
    client: TestClient, services: Services, worker: LocalWorker
) -> None:
    due = [submit(client, f"{i}\n".encode())["id"] for i in range(3)]
    later = submit(client)["id"]
    patch_job(services.db, later, run_after=utcnow() + timedelta(minutes=5))
    done = submit(client)["id"]
    cancelled = submit(client)["id"]
    client.post(f"/v1/jobs/{cancelled}/cancel")
    # Finish ``done`` without touching the others: drain would run them all, so claim and finish.
    assert repository.claim_job(services.db, done, owner="w", lease_seconds=5)
    assert repository.finish_succeeded(
        services.db, done, owner="w", result={}, output_key=None, output_name=None, output_content_type=None
    )

    report, dispatcher = run_sweep(services)
    assert dispatcher.submitted == due
    assert report.dispatched == 3
    # The dispatched ids are what a worker then runs; the backed-off one waits for its time.
    assert worker.drain() == 3
    assert row(services.db, later).status == "queued"


def test_sweep_of_an_idle_service_does_nothing(client: TestClient, services: Services) -> None:
    job_id = submit(client)["id"]
    repository.cancel_job(services.db, job_id)
    report, dispatcher = run_sweep(services)
    assert report == SweepReport()
    assert dispatcher.submitted == []


# ---- files ----------------------------------------------------------------------------------


def test_stale_temp_files_are_removed_fresh_ones_kept(
    client: TestClient, services: Services, data_dir: Path, settings: Settings
) -> None:
    stale = data_dir / "tmp" / "abandoned.part"
    fresh = data_dir / "tmp" / "in-progress.part"
    stale.write_bytes(b"half an upload")
    fresh.write_bytes(b"being written now")
    age(stale, settings.temp_max_age + 60)
    age(fresh, settings.temp_max_age - 60)
    report, _ = run_sweep(services)
    assert report.temp_removed == 1
    assert not stale.exists()
    assert fresh.exists()


def test_orphan_uploads_are_removed_but_not_those_with_rows(
    client: TestClient, services: Services, data_dir: Path, settings: Settings
) -> None:
    # Larger than FILEJOBS_INLINE_UPLOAD_BYTES: a file in uploads/, as the orphans are.
    owned = submit(client, b"owned\n" * settings.inline_upload_bytes)["id"]
    owned_path = data_dir / "uploads" / owned
    orphan = new_job_id()
    orphan_path = data_dir / "uploads" / orphan
    orphan_path.write_bytes(b"row never committed")
    orphan_output = data_dir / "outputs" / orphan / "1" / "out.txt"
    orphan_output.parent.mkdir(parents=True)
    orphan_output.write_bytes(b"x")
    young = data_dir / "uploads" / new_job_id()
    young.write_bytes(b"its row may be committing right now")
    for path in (owned_path, orphan_path):
        age(path, settings.temp_max_age + 60)

    report, _ = run_sweep(services, scan_orphans=False)
    assert report.orphans_removed == 0
    assert orphan_path.exists()

    report, _ = run_sweep(services)
    assert report.orphans_removed == 1
    assert not orphan_path.exists()
    assert not orphan_output.exists()
    assert owned_path.exists()
    assert young.exists()
    assert row(services.db, owned).status == "queued"


def test_retention_deletes_old_finished_jobs_and_their_files(
    client: TestClient, services: Services, worker: LocalWorker, data_dir: Path, settings: Settings
) -> None:
    old_success = submit(client, b"old\n", processor="upper")["id"]
    old_failure = submit(client, processor="fail")["id"]
    old_cancel = submit(client)["id"]
    recent = submit(client, b"new\n", processor="upper")["id"]
    client.post(f"/v1/jobs/{old_cancel}/cancel")
    assert worker.drain() == 3
    assert row(services.db, old_success).output_key is not None
    # Queued, created long ago: retention is for finished jobs. Its own content: the same bytes as
    # the old jobs' would be shared with them, and rightly kept for it (tests/jobs/test_dedup.py).
    stale_unfinished = submit(client, b"stale\n")["id"]
    now = utcnow()
    old = now - settings.retention - timedelta(hours=1)
    for job_id in (old_success, old_failure, old_cancel):
        patch_job(services.db, job_id, finished_at=old, created_at=old)
    patch_job(services.db, recent, finished_at=now - settings.retention + timedelta(hours=1))
    patch_job(services.db, stale_unfinished, created_at=old, run_after=now + timedelta(days=1))

    report, _ = run_sweep(services)
    assert report.expired == 3
    for job_id in (old_success, old_failure, old_cancel):
        assert repository.get_job(services.db, job_id) is None
        assert not [p for p in files_under(data_dir) if job_id in p.as_posix()]
        assert f"inline/{job_id}" not in kept_in_database(data_dir)
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert row(services.db, recent).status == "succeeded"
    assert client.get(f"/v1/jobs/{recent}/result").content == b"NEW\n"
    assert row(services.db, stale_unfinished).status == "queued"
    assert stored_content(data_dir, stale_unfinished) == b"stale\n"
    assert kept_in_database(data_dir) == sorted(f"inline/{job_id}" for job_id in (recent, stale_unfinished))

    report, _ = run_sweep(services)
    assert report.expired == 0


# ---- startup recovery -----------------------------------------------------------------------


def _leave_running(data_dir: Path, lease_left: timedelta, content: bytes = b"one two three\n") -> str:
    """Upload a job, then leave its row as a service killed mid-job would: running, with a lease
    held by a worker that no longer exists."""
    with TestClient(create_app(make_settings(data_dir), dispatcher=InMemoryDispatcher())) as client:
        services: Services = client.app_state["services"]
        job_id = submit(client, content)["id"]
        claim_as_ghost(services, job_id)
        patch_job(services.db, job_id, lease_expires_at=utcnow() + lease_left)
        assert row(services.db, job_id).status == "running"
    return job_id


def test_startup_recovers_a_job_whose_lease_expired(data_dir: Path) -> None:
    job_id = _leave_running(data_dir, -timedelta(seconds=30))
    settings = make_settings(data_dir, workers=1, lease_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        services: Services = client.app_state["services"]
        job = wait_for_status(services.db, job_id, "succeeded", "failed")
        assert job.status == "succeeded"
        assert job.attempts == 2
        assert job.result is not None
        assert job.result["words"] == 3
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_periodic_sweep_recovers_a_lease_that_expires_after_startup(data_dir: Path) -> None:
    job_id = _leave_running(data_dir, timedelta(seconds=1))
    settings = make_settings(data_dir, workers=1, lease_seconds=1.0, sweep_interval=0.2)
    with TestClient(create_app(settings)) as client:
        services: Services = client.app_state["services"]
        job = wait_for_status(services.db, job_id, "succeeded", "failed", timeout=20)
        assert job.status == "succeeded"
        assert job.attempts == 2


def test_startup_dispatches_jobs_queued_before_a_crash(data_dir: Path) -> None:
    """Rows committed but never dispatched (the process died after the 202) run after restart."""
    with TestClient(create_app(make_settings(data_dir), dispatcher=InMemoryDispatcher())) as client:
        ids = [submit(client, f"{i}\n".encode())["id"] for i in range(3)]
    with TestClient(create_app(make_settings(data_dir, workers=2))) as client:
        services: Services = client.app_state["services"]
        for job_id in ids:
            assert wait_for_status(services.db, job_id, "succeeded", "failed").status == "succeeded"
