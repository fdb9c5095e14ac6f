"""Resumable (tus) uploads on the S3 backend, against moto: the bytes go straight into one multipart
upload to the job's key (chunks under S3's 5 MiB part minimum kept as a small tail object), nothing
is on an API node's disk, any node resumes any upload (two apps sharing only the bucket and a
PostgreSQL database), and termination, expiry and refusals leave nothing behind."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.errors import Locked
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from filejobs.settings import MiB, Settings
from filejobs.testing.s3 import S3Bucket
from filejobs.tus.s3 import S3UploadStore
from tests.conftest import burst_worker, make_settings
from tests.services import fresh_postgres_database, unavailable_skips
from tests.tus.helpers import created, head, offset_of, patch

PART = 5 * MiB  # S3's smallest part


def text_file(size: int) -> bytes:
    """``size`` bytes of distinct text lines (the "upper" processor's input)."""
    lines = b"".join(b"line %08d of a resumable upload\n" % i for i in range(size // 30 + 1))
    return lines[:size]


def make_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, dispatcher=InMemoryDispatcher()), raise_server_exceptions=False)


def services_of(client: TestClient) -> Services:
    services: Services = client.app_state["services"]
    return services


@pytest.fixture
def s3_client(data_dir: Path, s3_bucket: S3Bucket) -> Iterator[TestClient]:
    with make_client(make_settings(data_dir, s3_part_size=PART, **s3_bucket.settings)) as client:
        yield client


def tus_keys(bucket: S3Bucket) -> list[str]:
    return [key for key in bucket.keys() if key.startswith("tus/")]  # noqa: SIM118 (a method)


def parts_of(bucket: S3Bucket) -> list[int]:
    uploads = bucket.multipart_uploads()
    assert len(uploads) == 1, uploads
    listed = bucket.client.list_parts(
        Bucket=bucket.name, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
    )
    return [part["Size"] for part in listed.get("Parts", [])]


def send_in_chunks(client: TestClient, url: str, data: bytes, start: int, end: int, chunk: int) -> None:
    offset = start
    while offset < end:
        piece = data[offset : min(end, offset + chunk)]
        answer = patch(client, url, offset, piece)
        assert answer.status_code == 204, answer.text
        offset += len(piece)
        assert int(answer.headers["upload-offset"]) == offset


def test_small_chunks_go_into_parts_and_a_tail_in_the_bucket(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    """Chunks of 700 KiB (under the part minimum) make 5 MiB parts of one multipart upload to
    ``uploads/<job id>``; what is past the last part waits as a tail object; the node's disk holds
    nothing; the completion only adds the last part."""
    services = services_of(s3_client)
    data = text_file(2 * PART + 123_457)
    url = created(s3_client, len(data), filename="notes.txt", processor="upper")
    send_in_chunks(s3_client, url, data, 0, 700 * 1024, 700 * 1024)
    assert s3_bucket.multipart_uploads() == []  # under a part: the tail only
    assert any("/tail-" in key for key in tus_keys(s3_bucket))
    send_in_chunks(s3_client, url, data, 700 * 1024, 2 * PART + 5, 700 * 1024)
    assert parts_of(s3_bucket) == [PART, PART]
    tails = [key for key in tus_keys(s3_bucket) if "/tail-" in key]
    assert tails == [tails[0]]
    assert tails[0].endswith(f"tail-{2 * PART + 5}")
    assert s3_bucket.read(tails[0]) == data[2 * PART : 2 * PART + 5]
    assert not list((services.settings.data_dir / "tus").rglob("*"))  # nothing on the node
    last = patch(s3_client, url, 2 * PART + 5, data[2 * PART + 5 :])
    assert last.status_code == 204, last.text
    job_id = last.headers["filejobs-job"].rsplit("/", 1)[1]
    assert s3_bucket.read(f"uploads/{job_id}") == data
    assert s3_bucket.multipart_uploads() == []
    assert [key.rsplit("/", 1)[1] for key in tus_keys(s3_bucket)] == ["state.json"]  # no tail, no marker
    burst_worker(services).drain()
    job = s3_client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3_client.get(f"/v1/jobs/{job_id}/result").content == data.upper()


def test_a_bad_checksum_drops_the_parts_it_sent(s3_client: TestClient, s3_bucket: S3Bucket) -> None:
    """A chunk spanning a part refused 460: its part is not counted; the offset stays; the chunk
    sent again (the part written over) makes the right file."""
    data = text_file(PART + 1000)
    url = created(s3_client, len(data), filename="c.txt", processor="upper")
    wrong = {"Upload-Checksum": "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()}
    assert patch(s3_client, url, 0, data[: PART + 10], wrong).status_code == 460
    assert offset_of(s3_client, url) == 0
    right = {"Upload-Checksum": "sha1 " + base64.b64encode(hashlib.sha1(data[: PART + 10]).digest()).decode()}
    assert patch(s3_client, url, 0, data[: PART + 10], right).status_code == 204
    last = patch(s3_client, url, PART + 10, data[PART + 10 :])
    assert last.status_code == 204, last.text
    job_id = last.headers["filejobs-job"].rsplit("/", 1)[1]
    assert s3_bucket.read(f"uploads/{job_id}") == data


def test_termination_and_expiry_abort_the_multipart_upload(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    services = services_of(s3_client)
    data = text_file(PART + 500)
    first = created(s3_client, len(data), filename="a.txt")
    second = created(s3_client, len(data), filename="b.txt")
    for url in (first, second):
        assert patch(s3_client, url, 0, data[: PART + 100]).status_code == 204
    assert len(s3_bucket.multipart_uploads()) == 2
    # The sweeper's abort of stale multipart uploads leaves a resumable upload's alone.
    services.storage.remove_stale_temp(0)
    assert len(s3_bucket.multipart_uploads()) == 2
    assert s3_client.delete(first, headers={"Tus-Resumable": "1.0.0"}).status_code == 204
    assert head(s3_client, first).status_code == 404
    assert len(s3_bucket.multipart_uploads()) == 1
    expiry = services.settings.upload_expiry.total_seconds()
    assert services.uploads.remove_expired(time.time() + 2 * expiry) == 1
    assert s3_bucket.multipart_uploads() == []
    assert s3_bucket.keys() == []


def test_a_refused_upload_leaves_nothing(s3_client: TestClient, s3_bucket: S3Bucket) -> None:
    """A file the processor refuses once complete (422: not text) is removed with its object."""
    data = b"\x00\x01binary" * 1000
    url = created(s3_client, len(data), filename="x.bin", processor="upper")
    answer = patch(s3_client, url, 0, data)
    assert answer.status_code in (415, 422), answer.text
    assert s3_bucket.multipart_uploads() == []
    assert s3_bucket.keys() == []


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with unavailable_skips(), fresh_postgres_database() as url:
        yield url


def test_two_nodes_sharing_bucket_and_database_resume_each_others_upload(
    tmp_path: Path, s3_bucket: S3Bucket, postgres_url: str
) -> None:
    """Node A takes a part and a tail; node B (its own data dir) resumes from HEAD's offset and
    completes; the job's hash is right though B saw only part of the bytes. While one node holds
    the upload, the other cannot."""
    common = {"s3_part_size": PART, "database_url": postgres_url, **s3_bucket.settings}
    with (
        make_client(make_settings(tmp_path / "a", **common)) as node_a,
        make_client(make_settings(tmp_path / "b", **common)) as node_b,
    ):
        data = text_file(2 * PART + 4321)
        url = created(node_a, len(data), filename="shared.txt", processor="upper")
        assert patch(node_a, url, 0, data[: PART + 777]).status_code == 204
        assert offset_of(node_b, url) == PART + 777
        store_a, store_b = services_of(node_a).uploads, services_of(node_b).uploads
        assert isinstance(store_b, S3UploadStore)
        upload_id = url.rsplit("/", 1)[1]
        owner = store_a_owner(store_a, upload_id)
        held = store_a.open(owner, upload_id, wait=0)
        assert held is not None
        with pytest.raises(Locked):
            store_b.open(owner, upload_id, wait=0)
        held.close()
        send_in_chunks(node_b, url, data, PART + 777, 2 * PART + 9, 3 * MiB)
        assert offset_of(node_a, url) == 2 * PART + 9
        last = patch(node_a, url, 2 * PART + 9, data[2 * PART + 9 :])
        assert last.status_code == 204, last.text
        job_id = last.headers["filejobs-job"].rsplit("/", 1)[1]
        assert head(node_b, url).headers["filejobs-job"] == f"/v1/jobs/{job_id}"
        job = node_b.get(f"/v1/jobs/{job_id}").json()
        assert job["file"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert s3_bucket.read(f"uploads/{job_id}") == data
        assert not list((tmp_path / "a" / "tus").rglob("*"))
        assert not list((tmp_path / "b" / "tus").rglob("*"))


def store_a_owner(store: object, upload_id: str) -> str:
    """The owner an anonymous upload is recorded under (read from the bucket's record)."""
    assert isinstance(store, S3UploadStore)
    for item in store._list(store.key("tus/")):
        if item["Key"].endswith(f"/{upload_id}/state.json"):
            state = store._read_state(item["Key"])
            assert state is not None
            return state.info.owner
    raise AssertionError("no record")


def test_a_deferred_length_upload_completes_from_its_tail(data_dir: Path, s3_bucket: S3Bucket) -> None:
    """Upload-Defer-Length: every chunk ends in a tail (the end is unknown); the PATCH that declares
    the length (no body) sends the tail as the last part. A chunk that passes the size limit after
    a checkpoint (413) goes back to the offset before it, its parts and tail with it."""
    settings = make_settings(
        data_dir,
        s3_part_size=PART,
        max_upload_bytes=PART + 3 * MiB,
        resumable_checkpoint_bytes=MiB,
        **s3_bucket.settings,
    )
    with make_client(settings) as client:
        data = text_file(PART + 2 * MiB)
        url = created(client, None, filename="d.txt", processor="upper")
        send_in_chunks(client, url, data, 0, MiB + 3, MiB + 3)
        # What append_body does for a body that passes the limit after a checkpoint (TestClient
        # sends a body in one piece, so the store is driven here as the PATCH would drive it).
        store = services_of(client).uploads
        upload_id = url.rsplit("/", 1)[1]
        upload = store.open(store_a_owner(store, upload_id), upload_id, wait=0)
        assert upload is not None
        upload.write([text_file(PART)])
        upload.commit(PART + MiB + 3)  # a checkpoint: a part and a new tail recorded
        assert len(s3_bucket.multipart_uploads()) == 1
        upload.info.offset = MiB + 3  # then 413: back to the offset before the PATCH
        upload.save()
        upload.discard()
        upload.close()
        assert offset_of(client, url) == MiB + 3
        send_in_chunks(client, url, data, MiB + 3, len(data), 2 * MiB)
        assert parts_of(s3_bucket) == [PART]
        last = patch(client, url, len(data), b"", {"Upload-Length": str(len(data))})
        assert last.status_code == 204, last.text
        job_id = last.headers["filejobs-job"].rsplit("/", 1)[1]
        assert s3_bucket.read(f"uploads/{job_id}") == data
        assert s3_bucket.multipart_uploads() == []


def test_a_bucket_gone_mid_upload_is_503_and_the_offset_stays(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    """The store failing under a PATCH (its multipart upload aborted behind its back): 503 with
    Retry-After, never a 500; the recorded offset is what the bucket held before."""
    data = text_file(3 * PART)
    url = created(s3_client, len(data), filename="f.txt", processor="upper")
    assert patch(s3_client, url, 0, data[: PART + 10]).status_code == 204
    for started in s3_bucket.multipart_uploads():
        s3_bucket.client.abort_multipart_upload(
            Bucket=s3_bucket.name, Key=started["Key"], UploadId=started["UploadId"]
        )
    answer = patch(s3_client, url, PART + 10, data[PART + 10 : 2 * PART + 20])
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    assert offset_of(s3_client, url) == PART + 10
