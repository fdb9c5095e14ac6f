"""``GET /metrics`` against the app (TestClient) with jobs run in burst mode in this process.

Counters and histograms are process-global, so every test compares a scrape after with one
before; the database gauges are absolute (each test has its own database).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from filejobs import metrics
from filejobs.api.exposition import render_metrics
from filejobs.db import Database
from filejobs.jobs.worker import LocalWorker
from filejobs.models import JobStatus, utcnow
from filejobs.services import Services
from filejobs.testing import post_file, submit
from tests.jobs.helpers import patch_job
from tests.metrics.helpers import Scrape

INSPECT = {"processor": "inspect"}


def scrape(client: TestClient) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    return Scrape(response.text)


def test_uploads_and_jobs_are_counted(client: TestClient, services: Services, worker: LocalWorker) -> None:
    before = scrape(client)
    contents = [b"hello world\n", b"a few more bytes than that\n" * 40]
    job_ids = [submit(client, content)["id"] for content in contents]

    queued = scrape(client)
    delta = queued - before
    assert delta.value("filejobs_uploaded_bytes_total") == sum(len(c) for c in contents)
    assert delta.value("filejobs_uploads_total", outcome="accepted") == 2
    assert delta.value("filejobs_uploads_total", outcome="rejected") == 0
    assert delta.value("filejobs_upload_duration_seconds_count") == 2
    assert delta.value("filejobs_upload_duration_seconds_sum") > 0
    assert queued.value("filejobs_queue_depth") == 2
    assert queued.value("filejobs_jobs", status="queued", **INSPECT) == 2
    assert queued.value("filejobs_jobs", status="succeeded", **INSPECT) == 0
    assert queued.has("filejobs_jobs", status="succeeded", **INSPECT)  # every status of a processor
    assert queued.value("filejobs_database_up") == 1

    assert worker.drain() == 2

    done = scrape(client)
    delta = done - queued
    labels = {"processor": "inspect", "status": "succeeded"}
    assert delta.value("filejobs_job_duration_seconds_count", **labels) == 2
    assert delta.value("filejobs_job_duration_seconds_bucket", le="+Inf", **labels) == 2
    assert delta.value("filejobs_job_duration_seconds_sum", **labels) > 0
    assert delta.value("filejobs_jobs_finished_total", **labels) == 2
    assert delta.value("filejobs_job_retries_total", processor="inspect") == 0
    assert delta.value("filejobs_uploaded_bytes_total") == 0
    assert done.value("filejobs_jobs", status="succeeded", **INSPECT) == 2
    assert done.value("filejobs_jobs", status="queued", **INSPECT) == 0
    assert done.value("filejobs_queue_depth") == 0
    assert done.value("filejobs_queue_oldest_seconds") == 0
    assert [client.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in job_ids] == ["succeeded"] * 2


def test_queue_gauges_count_only_due_jobs(client: TestClient, services: Services) -> None:
    waiting = submit(client)["id"]
    later = submit(client)["id"]
    patch_job(services.db, waiting, run_after=utcnow() - timedelta(seconds=120))
    patch_job(services.db, later, run_after=utcnow() + timedelta(hours=1))  # in backoff: not due
    now = scrape(client)
    assert now.value("filejobs_queue_depth") == 1
    assert 120 <= now.value("filejobs_queue_oldest_seconds") < 180
    assert now.value("filejobs_jobs", status="queued", **INSPECT) == 2


def test_a_retryable_failure_counts_a_retry(client: TestClient, worker: LocalWorker) -> None:
    before = scrape(client)
    submit(client, processor="flaky", params={"succeed_on": 2})["id"]
    assert worker.drain() == 2
    delta = scrape(client) - before
    assert delta.value("filejobs_job_retries_total", processor="flaky") == 1
    assert delta.value("filejobs_jobs_finished_total", processor="flaky", status="queued") == 1
    assert delta.value("filejobs_jobs_finished_total", processor="flaky", status="succeeded") == 1
    assert delta.value("filejobs_job_duration_seconds_count", processor="flaky", status="queued") == 1


def test_the_last_attempt_is_a_failure_not_a_retry(
    client: TestClient, worker: LocalWorker, services: Services
) -> None:
    before = scrape(client)
    job_id = submit(client, processor="fail", params={"code": "busy", "retryable": True})["id"]
    assert worker.drain() == services.settings.max_attempts
    after = scrape(client)
    delta = after - before
    assert delta.value("filejobs_job_retries_total", processor="fail") == services.settings.max_attempts - 1
    assert delta.value("filejobs_jobs_finished_total", processor="fail", status="failed") == 1
    assert after.value("filejobs_jobs", status="failed", processor="fail") == 1
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "failed"


def test_a_crashed_worker_is_retried_and_counted(client: TestClient, worker: LocalWorker) -> None:
    before = scrape(client)
    submit(client, processor="flaky", params={"succeed_on": 2, "crash": True})["id"]
    assert worker.drain() == 2
    delta = scrape(client) - before
    assert delta.value("filejobs_job_retries_total", processor="flaky") == 1


def test_a_non_retryable_failure_is_no_retry(client: TestClient, worker: LocalWorker) -> None:
    before = scrape(client)
    submit(client, processor="fail")["id"]
    assert worker.drain() == 1
    delta = scrape(client) - before
    assert delta.value("filejobs_job_retries_total", processor="fail") == 0
    assert delta.value("filejobs_jobs_finished_total", processor="fail", status="failed") == 1


@pytest.mark.parametrize(
    ("processor", "content", "status"),
    [
        ("no-such-processor", b"hello world\n", 422),
        ("text-only", b"\x89PNG\r\n\x1a\n" + bytes(64), 415),
        (None, b"", 422),
    ],
    ids=["unknown-processor", "unsupported-type", "empty-file"],
)
def test_a_rejected_upload_is_counted_without_its_bytes(
    client: TestClient, processor: str | None, content: bytes, status: int
) -> None:
    before = scrape(client)
    response = post_file(client, content, processor=processor)
    assert response.status_code == status, response.text
    after = scrape(client)
    delta = after - before
    assert delta.value("filejobs_uploads_total", outcome="rejected") == 1
    assert delta.value("filejobs_uploads_total", outcome="accepted") == 0
    assert delta.value("filejobs_uploaded_bytes_total") == 0
    assert delta.value("filejobs_upload_duration_seconds_count") == 0
    assert after.value("filejobs_queue_depth") == 0
    assert "filejobs_jobs" in after.families
    assert not after.families["filejobs_jobs"].samples  # no rows, no series


def test_a_lost_attempt_is_labelled_lost() -> None:
    labels = {"processor": "metrics-test", "status": "lost"}

    def finished() -> float:
        return REGISTRY.get_sample_value("filejobs_jobs_finished_total", labels) or 0.0

    before = finished()
    metrics.job_attempt_ended("metrics-test", None, 0.2)
    metrics.job_attempt_ended("metrics-test", JobStatus.succeeded, 0.2)
    assert finished() == before + 1


def test_openmetrics_when_asked_for(client: TestClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    assert "filejobs_queue_depth" in response.text


def test_metrics_are_documented_in_openapi(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]


def test_a_database_that_does_not_answer_leaves_the_other_metrics(tmp_path: Path) -> None:
    """No jobs table: the gauges are left out, filejobs_database_up says why, the rest is served."""
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        payload, content_type = render_metrics(db, None)
    finally:
        db.dispose()
    assert content_type == CONTENT_TYPE_PLAIN_0_0_4
    got = Scrape(payload.decode())
    assert got.value("filejobs_database_up") == 0
    assert not got.has("filejobs_queue_depth")
    assert got.has("filejobs_uploads_total", outcome="accepted")
