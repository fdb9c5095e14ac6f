"""The S3 backend against a real S3 server (moto's, on 127.0.0.1), in-process: uploads stream into
the bucket (single PUT, multipart), jobs read their input from it and store their outputs in it,
results come back streamed (with Range) or redirected, and every failure leaves nothing behind."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs import repository
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.sweeper import remove_orphan_uploads, sweep
from filejobs.object_storage import S3Storage
from filejobs.object_storage.sink import crc32
from filejobs.services import Services
from filejobs.settings import MiB, Settings
from filejobs.testing import post_file, submit
from filejobs.testing.s3 import S3Bucket
from tests.conftest import burst_worker, make_settings
from tests.tus.helpers import created, head, patch

PART = 5 * MiB  # S3's smallest part: a few parts cost little


@pytest.fixture
def s3_settings(data_dir: Path, s3_bucket: S3Bucket) -> Settings:
    return make_settings(data_dir, s3_part_size=PART, **s3_bucket.settings)


@pytest.fixture
def s3_client(s3_settings: Settings) -> Iterator[TestClient]:
    app = create_app(s3_settings, dispatcher=InMemoryDispatcher())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def services_of(client: TestClient) -> Services:
    services: Services = client.app_state["services"]
    return services


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_storage_url_picks_the_s3_backend(s3_client: TestClient) -> None:
    storage = services_of(s3_client).storage
    assert isinstance(storage, S3Storage)
    assert storage.part_size == PART


@pytest.mark.parametrize("size", [1000, 3 * PART + 12345], ids=["single-put", "multipart"])
def test_upload_is_stored_in_the_bucket_before_the_202(
    s3_client: TestClient, s3_bucket: S3Bucket, data_dir: Path, size: int
) -> None:
    content = (b"filejobs s3 " * (size // 12 + 1))[:size]
    response = post_file(s3_client, content, name="big.txt")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert s3_bucket.keys() == [f"uploads/{job['id']}"]
    assert s3_bucket.read(f"uploads/{job['id']}") == content
    assert s3_bucket.multipart_uploads() == []
    assert not (data_dir / "uploads").exists() or not any((data_dir / "uploads").iterdir())


def test_each_part_goes_with_its_crc32_and_no_second_pass_over_it(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    """A part is sent with the CRC32 of its bytes (the store checks it) and without a SHA-256 of
    its payload in the signature, even over plain http (botocore would read every part once more)."""
    storage = services_of(s3_client).storage
    assert isinstance(storage, S3Storage)
    client = storage.bucket.client
    sent: dict[int, dict[str, str]] = {}

    def capture(request: Any, **_: Any) -> None:
        number = int(parse_qs(urlsplit(request.url).query)["partNumber"][0])
        sent[number] = {
            name.lower(): value.decode() if isinstance(value, bytes) else value
            for name, value in request.headers.items()
        }

    client.meta.events.register("before-send.s3.UploadPart", capture)
    content = os.urandom(2 * PART + 12345)
    try:
        response = post_file(s3_client, content, name="parts.bin")
    finally:
        client.meta.events.unregister("before-send.s3.UploadPart", capture)
    assert response.status_code == 202, response.text
    assert sorted(sent) == [1, 2, 3]
    for number, headers in sent.items():
        part = content[(number - 1) * PART : number * PART]
        expected = base64.b64encode(zlib.crc32(part).to_bytes(4, "big")).decode()
        assert headers["x-amz-checksum-crc32"] == expected
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert s3_bucket.read(f"uploads/{response.json()['id']}") == content


def test_s3_sign_payload_signs_each_parts_sha256(data_dir: Path, s3_bucket: S3Bucket) -> None:
    """``S3_SIGN_PAYLOAD=true``: botocore's own choice over plain http, each part's SHA-256 signed."""
    settings = make_settings(data_dir, s3_part_size=PART, s3_sign_payload=True, **s3_bucket.settings)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        storage = services_of(client).storage
        assert isinstance(storage, S3Storage)
        signed: dict[int, str] = {}

        def capture(request: Any, **_: Any) -> None:
            number = int(parse_qs(urlsplit(request.url).query)["partNumber"][0])
            value = request.headers["x-amz-content-sha256"]
            signed[number] = value.decode() if isinstance(value, bytes) else value

        storage.bucket.client.meta.events.register("before-send.s3.UploadPart", capture)
        content = os.urandom(PART + 777)
        response = post_file(client, content, name="signed.bin")
        assert response.status_code == 202, response.text
        assert signed == {
            1: hashlib.sha256(content[:PART]).hexdigest(),
            2: hashlib.sha256(content[PART:]).hexdigest(),
        }
        assert s3_bucket.read(f"uploads/{response.json()['id']}") == content


def test_crc32_of_pieces_is_botocores_of_the_whole() -> None:
    from botocore.httpchecksum import Crc32Checksum

    data = os.urandom(300_000)
    pieces: list[bytes | memoryview] = [data[:1], memoryview(data)[1:70_000], data[70_000:]]
    whole = Crc32Checksum()
    whole.update(data)
    assert crc32(pieces) == base64.b64encode(whole.digest()).decode()
    assert crc32([]) == base64.b64encode(bytes(4)).decode()


def test_job_reads_its_input_from_the_bucket_and_stores_its_output(
    s3_client: TestClient, s3_bucket: S3Bucket, data_dir: Path
) -> None:
    services = services_of(s3_client)
    job_id = submit(s3_client, b"hello bucket\n", processor="upper", name="hi.txt")["id"]
    burst_worker(services).drain()
    job = s3_client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert f"outputs/{job_id}/1/upper.txt" in s3_bucket.keys("outputs/")
    result = s3_client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200
    assert result.content == b"HELLO BUCKET\n"
    assert result.headers["content-disposition"] == 'attachment; filename="hi.txt.upper.txt"'
    assert result.headers["content-type"].startswith("text/plain")
    partial = s3_client.get(f"/v1/jobs/{job_id}/result", headers={"Range": "bytes=6-11"})
    assert partial.status_code == 206
    assert partial.content == b"BUCKET"
    assert partial.headers["content-range"] == "bytes 6-11/13"
    outside = s3_client.get(f"/v1/jobs/{job_id}/result", headers={"Range": "bytes=100-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == "bytes */13"
    # The scratch copy of the input and the output went with the attempt.
    assert list((data_dir / "scratch").iterdir()) == []


def test_result_from_the_bucket_answers_conditional_requests(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    """If-None-Match and If-Range as the local backend answers them (tests/test_result_file.py)."""
    job_id = submit(s3_client, b"hello bucket\n", processor="upper", name="hi.txt")["id"]
    burst_worker(services_of(s3_client)).drain()
    url = f"/v1/jobs/{job_id}/result"
    whole = s3_client.get(url)
    assert whole.status_code == 200
    etag, last_modified = whole.headers["etag"], whole.headers["last-modified"]
    assert etag.startswith('"')
    assert last_modified.endswith(" GMT")
    for tag in (etag, f"W/{etag}", "*", f'"other", {etag}'):
        same = s3_client.get(url, headers={"If-None-Match": tag})
        assert same.status_code == 304, tag
        assert same.content == b""
        assert same.headers["etag"] == etag
        assert same.headers["last-modified"] == last_modified
    changed = s3_client.get(url, headers={"If-None-Match": '"other"'})
    assert (changed.status_code, changed.content) == (200, b"HELLO BUCKET\n")
    for validator in (etag, last_modified):
        ranged = s3_client.get(url, headers={"Range": "bytes=6-11", "If-Range": validator})
        assert (ranged.status_code, ranged.content) == (206, b"BUCKET"), validator
    for stale in ('"other"', f"W/{etag}", "Sun, 06 Nov 1994 08:49:37 GMT"):
        full = s3_client.get(url, headers={"Range": "bytes=6-11", "If-Range": stale})
        assert (full.status_code, full.content) == (200, b"HELLO BUCKET\n"), stale
        assert "content-range" not in full.headers
    s3_bucket.remove(f"outputs/{job_id}/1/upper.txt")
    gone = s3_client.get(url, headers={"If-None-Match": etag})
    assert gone.status_code == 410
    assert gone.headers["content-type"] == "application/problem+json"


def test_result_redirect_is_a_presigned_url_with_the_same_headers(
    data_dir: Path, s3_bucket: S3Bucket
) -> None:
    settings = make_settings(data_dir, result_redirect=True, result_redirect_ttl=60, **s3_bucket.settings)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        job_id = submit(client, b"redirect me\n", processor="upper", name="r.txt")["id"]
        burst_worker(services_of(client)).drain()
        answer = client.get(f"/v1/jobs/{job_id}/result", follow_redirects=False)
        assert answer.status_code == 307
        fetched = httpx.get(answer.headers["location"])
        assert fetched.status_code == 200
        assert fetched.content == b"REDIRECT ME\n"
        assert fetched.headers["content-disposition"] == 'attachment; filename="r.txt.upper.txt"'
        assert fetched.headers["content-type"].startswith("text/plain")
        s3_bucket.remove(f"outputs/{job_id}/1/upper.txt")
        gone = client.get(f"/v1/jobs/{job_id}/result", follow_redirects=False)
        assert gone.status_code == 410
        assert gone.headers["content-type"] == "application/problem+json"


def test_an_object_deleted_behind_our_back_is_input_missing_and_a_410(
    s3_client: TestClient, s3_bucket: S3Bucket, data_dir: Path
) -> None:
    services = services_of(s3_client)
    missing = submit(s3_client, b"soon gone\n", processor="upper")["id"]
    s3_bucket.remove(f"uploads/{missing}")
    done = submit(s3_client, b"kept\n", processor="upper")["id"]
    burst_worker(services).drain()
    job = s3_client.get(f"/v1/jobs/{missing}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "input_missing"
    s3_bucket.remove(f"outputs/{done}/1/upper.txt")
    result = s3_client.get(f"/v1/jobs/{done}/result")
    assert result.status_code == 410
    assert result.headers["content-type"] == "application/problem+json"
    assert "no longer stored" in result.json()["detail"]
    assert list((data_dir / "scratch").iterdir()) == []


def test_a_failing_job_leaves_no_scratch(s3_client: TestClient, data_dir: Path) -> None:
    services = services_of(s3_client)
    job_id = submit(s3_client, b"x\n", processor="boom")["id"]
    burst_worker(services).drain()
    assert s3_client.get(f"/v1/jobs/{job_id}").json()["status"] == "failed"
    assert list((data_dir / "scratch").iterdir()) == []


def test_a_refused_upload_leaves_nothing_in_the_bucket(s3_client: TestClient, s3_bucket: S3Bucket) -> None:
    big = b"a" * (2 * PART + 10)
    # Past one part (a multipart upload started), then refused: unknown processor, a truncated body.
    assert post_file(s3_client, big, processor="no-such").status_code == 422
    body = (
        b"--b\r\nContent-Disposition: form-data; name=file; filename=x.txt\r\n"
        b"Content-Type: text/plain\r\n\r\n" + big
    )
    truncated = s3_client.post(
        "/v1/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert truncated.status_code == 400
    assert s3_bucket.keys() == []
    assert s3_bucket.multipart_uploads() == []
    assert s3_client.get("/v1/jobs").json()["items"] == []


def test_delete_and_retention_remove_the_objects(s3_client: TestClient, s3_bucket: S3Bucket) -> None:
    services = services_of(s3_client)
    deleted = submit(s3_client, b"delete me\n", processor="upper")["id"]
    burst_worker(services).drain()
    assert len(s3_bucket.keys()) == 2
    assert s3_client.delete(f"/v1/jobs/{deleted}").status_code == 204
    assert s3_bucket.keys() == []
    expired = submit(s3_client, b"expire me\n", processor="upper")["id"]
    burst_worker(services).drain()
    settings = services.settings.model_copy(update={"retention": timedelta(0)})
    sweep(db=services.db, storage=services.storage, settings=settings, dispatcher=services.dispatcher)
    assert repository.get_job(services.db, expired) is None
    assert s3_bucket.keys() == []


def test_sweeper_aborts_stale_multipart_uploads_and_removes_orphans(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    from filejobs.ids import new_job_id

    services = services_of(s3_client)
    kept = submit(s3_client, b"has a row\n")["id"]
    orphan = new_job_id()
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"fj/uploads/{orphan}", Body=b"no row")
    dangling = s3_bucket.client.create_multipart_upload(
        Bucket=s3_bucket.name, Key=f"fj/uploads/{new_job_id()}"
    )
    storage = services.storage
    # Younger than the grace: both stay.
    assert storage.remove_stale_temp(3600) == 0
    assert remove_orphan_uploads(db=services.db, storage=storage, min_age=3600) == 0
    assert len(s3_bucket.multipart_uploads()) == 1
    time.sleep(1.1)  # S3 times have whole seconds: now both are older than a 1 s grace
    # (moto's multipart uploads all say they began in 2010: the job id in the key tells the truth)
    assert storage.remove_stale_temp(1) == 1
    assert s3_bucket.multipart_uploads() == []
    assert dangling["UploadId"]
    assert remove_orphan_uploads(db=services.db, storage=storage, min_age=1) == 1
    assert s3_bucket.keys() == [f"uploads/{kept}"]


def test_readyz_heads_the_bucket_and_metrics_count_storage_calls(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    ready = s3_client.get("/readyz")
    assert ready.status_code == 200, ready.text
    submit(s3_client, b"count me\n")["id"]
    metrics = s3_client.get("/metrics").text
    assert 'filejobs_storage_operations_total{operation="put_object"}' in metrics
    assert 'filejobs_storage_operations_total{operation="head_bucket"}' in metrics
    timed = [
        line
        for line in metrics.splitlines()
        if line.startswith('filejobs_storage_operation_duration_seconds_count{operation="put_object"}')
    ]
    assert len(timed) == 1
    assert float(timed[0].rsplit(" ", 1)[1]) >= 1
    s3_bucket.drop()
    not_ready = s3_client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["storage"].startswith("failed")
    s3_bucket.client.create_bucket(Bucket=s3_bucket.name)  # for the fixture's teardown
    metrics = s3_client.get("/metrics").text
    assert 'filejobs_storage_errors_total{kind="no_bucket",operation="head_bucket"}' in metrics


def test_storage_urls(tmp_path: Path) -> None:
    from filejobs.storage import LocalStorage, open_storage

    default = open_storage(make_settings(tmp_path / "data"))
    assert isinstance(default, LocalStorage)
    assert default.root == (tmp_path / "data").resolve()
    elsewhere = open_storage(make_settings(tmp_path / "data", storage_url=f"file://{tmp_path / 'files'}"))
    assert isinstance(elsewhere, LocalStorage)
    assert elsewhere.root == (tmp_path / "files").resolve()
    for bad in ("file://relative/path", "ftp://host/x", "s3://", "s3://bucket?x=1"):
        with pytest.raises(ValueError, match="FILEJOBS_STORAGE_URL"):
            open_storage(make_settings(tmp_path / "data", storage_url=bad))


def test_free_disk_does_not_limit_uploads_to_a_bucket(data_dir: Path, s3_bucket: S3Bucket) -> None:
    settings = make_settings(data_dir, min_free_disk=2**62, **s3_bucket.settings)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        assert post_file(client, b"no disk needed\n").status_code == 202
    local = make_settings(data_dir / "local", min_free_disk=2**62)
    with TestClient(create_app(local, dispatcher=InMemoryDispatcher())) as client:
        assert post_file(client, b"disk needed\n").status_code == 507


def test_the_lease_is_renewed_while_a_large_input_is_fetched(
    data_dir: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that takes longer than the lease must not lose the job to the sweeper: every chunk
    renews it (at most once a CHECK_EVERY), and a job taken meanwhile stops the copy."""
    from filejobs.jobs import runner

    monkeypatch.setattr(runner, "CHECK_EVERY", 0.0)  # renew at every chunk
    renewals: list[bool] = []
    real_download = S3Storage.download

    def counting_download(self: S3Storage, key: str, target: Path, keep_alive: object = None) -> None:
        assert callable(keep_alive)
        real_renew = repository.renew_lease

        def renew(*args: object, **kwargs: object) -> bool:
            owned = real_renew(*args, **kwargs)  # type: ignore[arg-type]
            renewals.append(owned)
            return owned

        monkeypatch.setattr(repository, "renew_lease", renew)
        try:
            real_download(self, key, target, keep_alive)
        finally:
            monkeypatch.setattr(repository, "renew_lease", real_renew)

    monkeypatch.setattr(S3Storage, "download", counting_download)
    settings = make_settings(data_dir, s3_part_size=PART, **s3_bucket.settings)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services = services_of(client)
        kept = submit(client, b"x" * (3 * MiB), processor="upper")["id"]
        burst_worker(services).drain()
        assert client.get(f"/v1/jobs/{kept}").json()["status"] == "succeeded"
        assert len(renewals) >= 3, renewals  # one per MiB read, at least
        assert all(renewals)

        # Cancelled as its input is being copied: the copy stops at its first chunk, nothing stays.
        cancelled = submit(client, b"y" * (3 * MiB), processor="upper")["id"]
        real = S3Storage.download

        def cancel_first(self: S3Storage, key: str, target: Path, keep_alive: object = None) -> None:
            assert client.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200
            real(self, key, target, keep_alive)

        monkeypatch.setattr(S3Storage, "download", cancel_first)
        burst_worker(services).drain()
        assert client.get(f"/v1/jobs/{cancelled}").json()["status"] == "cancelled"
        assert list((data_dir / "scratch").iterdir()) == []


def test_a_resumable_upload_on_s3_goes_up_to_the_bucket_and_runs(
    s3_client: TestClient, s3_bucket: S3Bucket
) -> None:
    """A tus upload on the S3 backend: its chunks go into the bucket (a tail object while under a
    part), the last one completes the job's object (not a link into a data directory) and the job
    runs from it (tests/s3/test_s3_tus.py has the parts, the tail, the resume on another node)."""
    services = services_of(s3_client)
    data = b"resumable to a bucket\n" * 5000
    url = created(s3_client, len(data), filename="r.txt", processor="upper")
    assert patch(s3_client, url, 0, data[:50_000]).status_code == 204
    last = patch(s3_client, url, 50_000, data[50_000:])
    assert last.status_code == 204, last.text
    job_id = last.headers["filejobs-job"].rsplit("/", 1)[1]
    assert s3_bucket.read(f"uploads/{job_id}") == data
    assert not list(services.settings.data_dir.glob("uploads/*"))  # nothing stored on the node
    burst_worker(services).drain()
    assert s3_client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert s3_client.get(f"/v1/jobs/{job_id}/result").content == data.upper()
    assert head(s3_client, url).headers["filejobs-job"] == f"/v1/jobs/{job_id}"


def test_the_lease_is_renewed_while_a_large_output_goes_up(
    data_dir: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output upload that takes longer than the lease renews it (first, then every
    KEEP_ALIVE_EVERY s); a job cancelled meanwhile stops the upload and leaves no output."""
    from filejobs.jobs import runner
    from filejobs.object_storage import store

    monkeypatch.setattr(runner, "CHECK_EVERY", 0.0)  # every keep-alive renews
    monkeypatch.setattr(store, "KEEP_ALIVE_EVERY", 0.001)
    renewals: list[bool] = []
    real_renew = repository.renew_lease

    def renew(*args: object, **kwargs: object) -> bool:
        owned = real_renew(*args, **kwargs)  # type: ignore[arg-type]
        renewals.append(owned)
        return owned

    real_upload = S3Storage.upload_file
    uploading: list[str] = []

    def watched_upload(self: S3Storage, path: Path, key: str, keep_alive: object = None) -> None:
        assert callable(keep_alive)
        uploading.append(key)
        before = len(renewals)
        real_upload(self, path, key, keep_alive)
        assert len(renewals) > before  # renewed while it went up

    settings = make_settings(data_dir, s3_part_size=PART, **s3_bucket.settings)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services = services_of(client)
        kept = submit(client, b"x" * (6 * MiB), processor="upper")["id"]
        monkeypatch.setattr(S3Storage, "upload_file", watched_upload)
        monkeypatch.setattr(repository, "renew_lease", renew)
        burst_worker(services).drain()
        assert client.get(f"/v1/jobs/{kept}").json()["status"] == "succeeded"
        assert uploading
        assert all(renewals)

        # Cancelled as its output goes up: the upload stops at the first keep-alive, nothing stays.
        cancelled = submit(client, b"y" * (6 * MiB), processor="upper")["id"]

        def cancel_first(self: S3Storage, path: Path, key: str, keep_alive: object = None) -> None:
            assert client.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200
            real_upload(self, path, key, keep_alive)

        monkeypatch.setattr(S3Storage, "upload_file", cancel_first)
        burst_worker(services).drain()
        assert client.get(f"/v1/jobs/{cancelled}").json()["status"] == "cancelled"
        assert not [key for key in s3_bucket.keys() if key.startswith(f"outputs/{cancelled}")]  # noqa: SIM118
        assert s3_bucket.multipart_uploads() == []
