"""FILEJOBS_JOB_MEMORY_LIMIT: the worker child's address-space bound, and what running out does.

The ``hog`` test processor maps untouched zero pages, so going past the limit costs no RAM.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.celery_app import make_celery
from filejobs.jobs.celery_worker import TaskRunner
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.executor import ChildProcess
from filejobs.jobs.messages import RunRequest
from filejobs.memory import parse_size
from filejobs.processors.base import Limits
from filejobs.settings import GiB, MiB, Settings
from filejobs.testing import submit
from tests.conftest import burst_worker, make_settings
from tests.jobs.test_executor import INSPECT, request, run

HOG = "tests.sample_processors:Hog"
LIMIT = 512 * MiB


def hog(work: Path, mib: int, *, limit: int = LIMIT, in_thread: bool = False) -> RunRequest:
    return request(work, HOG, {"mib": mib, "in_thread": in_thread}, limits=Limits(memory_bytes=limit))


def test_a_job_past_the_limit_fails_resource_exhausted_and_gets_a_fresh_child(
    child: ChildProcess, work: Path
) -> None:
    assert run(child, hog(work, 16)).kind == "done"
    first = child.pid
    outcome = run(child, hog(work, 1024))
    assert outcome.kind == "error"
    assert outcome.failed.code == "resource_exhausted"
    assert outcome.failed.retryable is False
    assert "512 MiB" in outcome.failed.message
    assert not child.alive()  # replaced: no fragmented heap or half-failed library for the next job
    again = run(child, hog(work, 16))
    assert again.kind == "done"
    assert again.done.result["pid"] != first


def test_the_same_job_passes_without_a_limit(child: ChildProcess, work: Path) -> None:
    """0 means no limit, and a later job in the same child may have a larger one than the last."""
    assert run(child, hog(work, 1024)).failed.code == "resource_exhausted"
    assert run(child, hog(work, 1024, limit=0)).kind == "done"
    assert run(child, hog(work, 1024, limit=2 * GiB)).kind == "done"


def test_a_thread_that_runs_out_ends_the_child_as_resource_exhausted(child: ChildProcess, work: Path) -> None:
    outcome = run(child, hog(work, 1024, in_thread=True))
    assert outcome.kind == "error"
    assert outcome.failed.code == "resource_exhausted"
    assert not child.alive()


def test_ordinary_jobs_fit_the_default_limit_with_room_to_spare(child: ChildProcess, work: Path) -> None:
    default = Settings().job_memory_limit
    assert default == 1 * GiB
    req = request(work, INSPECT, content=b"word " * 100_000, limits=Limits(memory_bytes=default))
    assert run(child, req).kind == "done"
    assert child.pid is not None
    # What RLIMIT_AS counts (virtual size) once a job ran: about 260 MiB, most of it mapped, not used.
    assert psutil.Process(child.pid).memory_info().vms < 384 * MiB


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("1073741824", GiB),
        ("512MiB", 512 * MiB),
        ("512M", 512 * MiB),
        ("512m", 512 * MiB),
        ("1GiB", GiB),
        ("1.5 GiB", 3 * GiB // 2),
        ("1500MB", 1_500_000_000),
        ("64kB", 64_000),
        ("0", 0),
    ],
)
def test_sizes_are_read_in_bytes_or_units(monkeypatch: pytest.MonkeyPatch, given: str, size: int) -> None:
    assert parse_size(given) == size
    monkeypatch.setenv("FILEJOBS_JOB_MEMORY_LIMIT", given)
    assert Settings().job_memory_limit == size


@pytest.mark.parametrize("given", ["lots", "-1", "1 GiBs", "1XB"])
def test_bad_sizes_are_refused(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv("FILEJOBS_JOB_MEMORY_LIMIT", given)
    with pytest.raises(ValueError, match="job_memory_limit"):
        Settings()


def test_through_the_api_the_job_fails_once_not_retried(data_dir: Path) -> None:
    settings = make_settings(data_dir, job_memory_limit="512MiB", max_attempts=3)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services = client.app_state["services"]
        big = submit(client, processor="hog", params={"mib": 1024})["id"]
        small = submit(client, processor="hog", params={"mib": 16})["id"]
        burst_worker(services).drain()
        job = client.get(f"/v1/jobs/{big}").json()
        assert job["status"] == "failed"
        assert job["attempts"] == 1
        assert job["error"]["code"] == "resource_exhausted"
        assert client.get(f"/v1/jobs/{small}").json()["status"] == "succeeded"


def test_celery_workers_run_jobs_under_the_same_limit(data_dir: Path) -> None:
    """The Celery task body (TaskRunner) runs the job through the same child, limit included."""
    settings = make_settings(data_dir, job_memory_limit=LIMIT)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        job_id = submit(client, processor="hog", params={"mib": 1024})["id"]
        celery_settings = make_settings(data_dir, job_memory_limit=LIMIT, broker_url="memory://")
        runner = TaskRunner(celery_settings, make_celery(celery_settings))
        try:
            assert runner(job_id) == "failed"
        finally:
            runner.close()
        assert client.get(f"/v1/jobs/{job_id}").json()["error"]["code"] == "resource_exhausted"
