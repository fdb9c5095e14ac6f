"""Two ``filejobs serve`` processes sharing only a bucket (moto) and a PostgreSQL database, each
with its own data directory: tuspy starts an upload on one in 1 MiB chunks (under S3's part
minimum) and resumes it on the other, which makes the one job, with the right SHA-256; neither
node keeps a byte of it on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tusclient.client as tusclient  # tuspy, the dev extra

from filejobs.testing import ServerFactory, server_factory, status_is, wait_for
from filejobs.testing.s3 import S3Bucket
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.services import fresh_postgres_database, unavailable_skips

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MiB = 1024 * 1024


@pytest.fixture
def start_server(tmp_path: Path, s3_bucket: S3Bucket) -> Iterator[ServerFactory]:
    with unavailable_skips(), fresh_postgres_database() as database_url:
        defaults = {
            "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
            "FILEJOBS_WORKERS": "1",
            "FILEJOBS_DATABASE_URL": database_url,
            "FILEJOBS_S3_PART_SIZE": str(5 * MiB),
            **s3_bucket.env,
        }
        with server_factory(tmp_path, tmp_path / "a", defaults) as start:
            yield start


def test_tuspy_resumes_an_upload_on_another_node(
    start_server: ServerFactory, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    node_a = start_server(tmp_path / "a")
    node_b = start_server(tmp_path / "b")
    size = 12 * MiB + 4321
    path = tmp_path / "notes.txt"
    path.write_bytes(b"".join(b"line %08d of notes\n" % i for i in range(size // 19 + 1))[:size])
    data = path.read_bytes()
    metadata = {"filename": "notes.txt", "processor": "upper", "params": "{}"}
    first = tusclient.TusClient(f"{node_a.base_url}/v1/uploads").uploader(
        file_path=str(path), chunk_size=MiB, metadata=metadata
    )
    for _ in range(7):  # a part of 5 MiB and a 2 MiB tail on node A
        first.upload_chunk()
    assert first.offset == 7 * MiB
    upload_path = "/v1/uploads/" + str(first.url).rsplit("/", 1)[1]
    second = tusclient.TusClient(f"{node_b.base_url}/v1/uploads").uploader(
        file_path=str(path), chunk_size=3 * MiB, url=f"{node_b.base_url}{upload_path}"
    )
    assert second.offset == 7 * MiB  # HEAD on node B: the bytes in the bucket
    second.upload()
    with node_a.client() as http:
        answer = http.head(upload_path, headers={"Tus-Resumable": "1.0.0"})
        assert answer.headers["upload-offset"] == str(size)
        job_id = answer.headers["filejobs-job"].rsplit("/", 1)[1]
        job = wait_for(http, job_id, status_is("succeeded", "failed"), timeout=60)
        assert job["status"] == "succeeded", job
        assert job["file"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert http.get(f"/v1/jobs/{job_id}/result").content == data.upper()
        assert len(http.get("/v1/jobs").json()["items"]) == 1
    assert s3_bucket.read(f"uploads/{job_id}") == data
    for node in ("a", "b"):
        assert not [p for p in (tmp_path / node / "tus").rglob("*") if p.is_file()]
