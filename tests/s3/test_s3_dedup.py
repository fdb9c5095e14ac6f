"""Content-addressed files and result reuse on the S3 backend (moto): the same content is one
object per key, shared outputs stay while a job references them, the last delete (or the orphan
scan after a crash) removes them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs import repository
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.sweeper import remove_orphan_uploads
from filejobs.services import Services
from filejobs.settings import MiB, Settings
from filejobs.testing import submit
from filejobs.testing.s3 import S3Bucket
from tests.conftest import burst_worker, make_settings

CONTENT = b"one scan in a bucket\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def s3_settings(data_dir: Path, s3_bucket: S3Bucket) -> Settings:
    return make_settings(data_dir, s3_part_size=5 * MiB, reuse=True, **s3_bucket.settings)


@pytest.fixture
def s3_client(s3_settings: Settings) -> Iterator[TestClient]:
    with TestClient(
        create_app(s3_settings, dispatcher=InMemoryDispatcher()), raise_server_exceptions=False
    ) as c:
        yield c


def test_one_object_per_content_shared_outputs_and_the_last_delete(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    services: Services = s3_client.app_state["services"]
    first = submit(s3_client, CONTENT, processor="upper")["id"]
    burst_worker(services).drain()
    output = repository.require_job(services.db, first).output_key
    assert output is not None

    reused = submit(s3_client, CONTENT, processor="upper")
    assert reused["status"] == "succeeded"
    assert reused["reused_from"] == first
    by_hash = s3_client.post("/v1/jobs", files={"file_sha256": (None, SHA), "processor": (None, "inspect")})
    assert by_hash.status_code == 202, by_hash.text
    assert s3_bucket.keys() == sorted([f"uploads/{first}", output])  # the second upload's object went

    assert s3_client.delete(f"/v1/jobs/{first}").status_code == 204
    assert s3_client.get(f"/v1/jobs/{reused['id']}/result", follow_redirects=True).content == CONTENT.upper()
    assert s3_bucket.keys() == sorted([f"uploads/{first}", output])
    assert s3_client.delete(f"/v1/jobs/{reused['id']}").status_code == 204
    assert s3_bucket.keys() == [f"uploads/{first}"]  # the by-hash job still reads it
    burst_worker(services).drain()
    assert repository.require_job(services.db, by_hash.json()["id"]).status == "succeeded"

    # A crash after the last delete's commit: the orphan scan takes the bytes, not before the grace.
    repository.delete_job_releasing(services.db, by_hash.json()["id"])
    assert remove_orphan_uploads(db=services.db, storage=services.storage, min_age=3600) == 0
    assert s3_bucket.keys() == [f"uploads/{first}"]
    assert remove_orphan_uploads(db=services.db, storage=services.storage, min_age=0) == 1
    assert s3_bucket.keys() == []
