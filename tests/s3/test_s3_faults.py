"""The S3 backend when things go wrong: a store that cannot be reached, has no such bucket or
refuses the credentials (503 + Retry-After at upload time, no row, nothing half-written;
``serve`` and ``worker`` refuse to start with one line), a client gone mid-upload and a part
that fails (the multipart upload is aborted)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.errors import ClientGone, ServiceUnavailable
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.object_storage import S3Storage
from filejobs.settings import MiB
from filejobs.testing import base_env, free_port, post_file, submit
from filejobs.testing.s3 import CREDENTIALS as S3_CREDENTIALS
from filejobs.testing.s3 import S3Bucket, s3_server_process
from filejobs.uploads import Limits, receive_upload
from tests.conftest import make_settings

PART = 5 * MiB
BOUNDARY = "fjboundary"
HEAD = (
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=big.bin\r\n"
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def unreachable_settings(data_dir: Path) -> dict[str, object]:
    return {
        "storage_url": "s3://nowhere/fj",
        "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
        "s3_timeout": 2,
    }


@pytest.mark.parametrize("where", ["unreachable", "no-such-bucket"])
def test_upload_to_unavailable_storage_is_503_and_leaves_nothing(
    data_dir: Path, s3_bucket: S3Bucket, where: str
) -> None:
    overrides = (
        unreachable_settings(data_dir)
        if where == "unreachable"
        else {**s3_bucket.settings, "storage_url": "s3://no-such-bucket-here/fj"}
    )
    settings = make_settings(data_dir, s3_part_size=PART, **overrides)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        for content in (b"small file\n", b"x" * (PART + 100)):
            response = post_file(client, content)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            assert response.headers["content-type"] == "application/problem+json"
            assert "storage is unavailable" in response.json()["detail"]
        assert client.get("/v1/jobs").json()["items"] == []
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["storage"].startswith("failed")
    assert s3_bucket.multipart_uploads() == []


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_fail_fast_naming_the_bucket(
    tmp_path: Path, s3_bucket: S3Bucket, command: str
) -> None:
    env = base_env(
        {
            **s3_bucket.env,
            "FILEJOBS_STORAGE_URL": "s3://no-such-bucket-here/fj",
            "FILEJOBS_DATA_DIR": str(tmp_path / "data"),
            "FILEJOBS_BACKEND": "celery",
            "FILEJOBS_BROKER_URL": "redis://127.0.0.1:6379/0",
        }
    )
    args = [sys.executable, "-m", "filejobs.cli", command]
    if command == "serve":
        args += ["--port", str(free_port())]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "no-such-bucket-here" in lines[0]
    assert "no_bucket" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.fixture
def strict_s3(tmp_path: Path) -> Iterator[S3Bucket]:
    """A moto server of its own that, once the test's bucket is made, checks every request's
    credentials: the tests' (like any others) are then wrong, answered 403 InvalidAccessKeyId."""
    with s3_server_process(tmp_path / "moto.log", authenticate_after=1) as server:
        client = server.client()
        name = f"fj-{uuid.uuid4().hex[:16]}"
        client.create_bucket(Bucket=name)
        yield S3Bucket(server=server, name=name, client=client)


def test_wrong_credentials_at_upload_time_are_503_and_leave_nothing(
    data_dir: Path, strict_s3: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(data_dir, s3_part_size=PART, **strict_s3.settings)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        for content in (b"small file\n", b"x" * (PART + 100)):  # a single PUT, a multipart upload
            response = post_file(client, content)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            assert response.headers["content-type"] == "application/problem+json"
            assert "storage is unavailable" in response.json()["detail"]
        assert client.get("/v1/jobs").json()["items"] == []
        metrics = client.get("/metrics").text
        assert 'filejobs_storage_errors_total{kind="denied",operation="put_object"}' in metrics
        assert 'filejobs_storage_errors_total{kind="denied",operation="create_multipart_upload"}' in metrics
    strict_s3.server.stop_authenticating()
    assert strict_s3.keys() == []
    assert strict_s3.multipart_uploads() == []


def test_serve_fails_fast_on_wrong_credentials_naming_the_bucket(tmp_path: Path, strict_s3: S3Bucket) -> None:
    env = base_env({**strict_s3.env, "FILEJOBS_DATA_DIR": str(tmp_path / "data")})
    args = [sys.executable, "-m", "filejobs.cli", "serve", "--port", str(free_port())]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert strict_s3.name in lines[0]
    assert "denied" in lines[0]
    assert "Traceback" not in done.stderr


async def _body(
    size: int, *, after: int | None = None, then: object = None, bucket: S3Bucket | None = None
) -> AsyncIterator[bytes]:
    """A multipart body of ``size`` file bytes; once ``after`` bytes went out, ``then()`` is called
    (or the client goes away). The receiver's writer is at most a few MiB behind the body, so past
    two parts the multipart upload exists in ``bucket`` (checked)."""
    yield HEAD
    sent = 0
    chunk = b"z" * (256 * 1024)
    while sent < size:
        if after is not None and sent >= after:
            if bucket is not None:
                assert len(bucket.multipart_uploads()) == 1, "no multipart upload in progress"
            if callable(then):
                then()
            else:
                raise ClientGone()
            after = None
        yield chunk
        sent += len(chunk)
    yield TAIL


def _receive(storage: S3Storage, body: AsyncIterator[bytes]) -> object:
    return receive_upload(
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        body=body,
        open_sink=storage.open_upload,
        limits=Limits(max_file_bytes=64 * MiB, max_fields=8, max_field_bytes=1024),
        check_fields=lambda fields: None,
        field_names=(),
    )


def test_a_client_gone_mid_upload_aborts_the_multipart_upload(data_dir: Path, s3_bucket: S3Bucket) -> None:
    storage = S3Storage.from_settings(make_settings(data_dir, s3_part_size=PART, **s3_bucket.settings))
    with pytest.raises(ClientGone):
        asyncio.run(_receive(storage, _body(8 * PART, after=3 * PART, bucket=s3_bucket)))  # type: ignore[arg-type]
    assert s3_bucket.multipart_uploads() == []
    assert s3_bucket.keys() == []


def test_a_failed_part_is_503_and_aborts(data_dir: Path, s3_bucket: S3Bucket) -> None:
    storage = S3Storage.from_settings(make_settings(data_dir, s3_part_size=PART, **s3_bucket.settings))

    def abort_behind_its_back() -> None:
        for started in s3_bucket.multipart_uploads():
            s3_bucket.client.abort_multipart_upload(
                Bucket=s3_bucket.name, Key=started["Key"], UploadId=started["UploadId"]
            )

    with pytest.raises(ServiceUnavailable) as refused:
        asyncio.run(
            _receive(storage, _body(8 * PART, after=2 * PART, then=abort_behind_its_back, bucket=s3_bucket))
        )  # type: ignore[arg-type]
    assert refused.value.headers["Retry-After"]
    assert s3_bucket.multipart_uploads() == []
    assert s3_bucket.keys() == []


def test_a_part_body_reads_its_pieces_as_one_file() -> None:
    import random

    from filejobs.object_storage.sink import PartBody

    rng = random.Random(7)
    pieces: list[bytes | memoryview] = [rng.randbytes(rng.randint(1, 5000)) for _ in range(40)]
    pieces[3] = memoryview(pieces[3])[1:]  # the receiver hands over views of the request's chunks
    whole = b"".join(pieces)
    body = PartBody(pieces)

    def read(size: int) -> bytes:
        """What a reader gets by reading blocks of ``size`` until ``size`` bytes or the end (a read
        may stop short at a piece's end, as a raw file's may: never empty before the end)."""
        got = b""
        while len(got) < size:
            block = body.read(size - len(got))
            assert len(block) <= size - len(got)
            if not block:
                break
            got += block
        return got

    assert len(body) == len(whole)
    assert b"".join(iter(lambda: bytes(body.read(128 * 1024)), b"")) == whole
    for _ in range(300):
        position, size = rng.randint(0, len(whole)), rng.randint(0, 9000)
        assert body.seek(position) == position
        assert read(size) == whole[position : position + size]
        assert body.tell() == min(len(whole), position + size)
    assert body.seek(0, 2) == len(whole)
    assert body.read(10) == b""


def test_parts_are_exactly_part_size_and_no_more_than_parts_in_flight_are_held(
    data_dir: Path, s3_bucket: S3Bucket
) -> None:
    import random
    import threading

    storage = S3Storage.from_settings(make_settings(data_dir, s3_part_size=PART, **s3_bucket.settings))
    sizes: dict[int, int] = {}  # by part number: parts in flight may start in any order
    sending = 0
    most_at_once = 0
    held = 0  # bytes of the parts being sent
    lock = threading.Lock()
    call = storage.bucket.call

    def counting(operation: str, /, **kwargs: object) -> object:
        nonlocal sending, most_at_once, held
        if operation != "upload_part":
            return call(operation, **kwargs)
        size = len(kwargs["Body"])  # type: ignore[arg-type]
        with lock:
            sending += 1
            held += size
            most_at_once = max(most_at_once, sending)
            sizes[kwargs["PartNumber"]] = size  # type: ignore[index]
        try:
            return call(operation, **kwargs)
        finally:
            with lock:
                sending -= 1
                held -= size

    storage.bucket.call = counting  # type: ignore[method-assign]
    rng = random.Random(16)
    # Pieces of every size: views, bytes, one longer than two parts (cut into three parts).
    pieces: list[bytes | memoryview] = [rng.randbytes(rng.randint(1, 700 * 1024)) for _ in range(12)]
    pieces.insert(5, memoryview(rng.randbytes(2 * PART + 777))[3:])
    whole = b"".join(pieces)

    async def upload() -> str:
        sink = storage.open_upload()
        for start in range(0, len(pieces), 3):
            await sink.write(pieces[start : start + 3])
            # What a write left behind (sent and filling) is never more than parts_in_flight parts.
            with lock:
                assert held + sink._buffered <= storage.parts_in_flight * PART
        await sink.write(b"", final=True)
        await sink.commit(sink.key)
        return sink.key

    key = asyncio.run(upload())
    numbers = sorted(sizes)
    assert numbers == list(range(1, len(numbers) + 1))
    assert [sizes[number] for number in numbers[:-1]] == [PART] * (len(whole) // PART)
    assert sum(sizes.values()) == len(whole)
    # The last part too: the wait after the part before it left room.
    assert most_at_once <= storage.parts_in_flight
    assert s3_bucket.read(key) == whole
    assert s3_bucket.multipart_uploads() == []


def test_delete_while_the_store_is_down_is_204_and_the_orphan_scan_cleans_up(
    data_dir: Path, s3_bucket: S3Bucket
) -> None:
    from filejobs.jobs.sweeper import remove_orphan_uploads
    from filejobs.object_storage.client import make_client
    from filejobs.services import Services

    settings = make_settings(data_dir, **s3_bucket.settings)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services: Services = client.app_state["services"]
        storage = services.storage
        assert isinstance(storage, S3Storage)
        job_id = submit(client, b"delete me while the store is down\n")["id"]
        working = storage.bucket.client
        storage.bucket.client = make_client(f"http://127.0.0.1:{free_port()}", 1)
        try:
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        finally:
            storage.bucket.client = working
        assert s3_bucket.keys() == [f"uploads/{job_id}"]
        # LastModified has whole seconds: the object is past a zero grace within one.
        deadline = time.monotonic() + 5
        while remove_orphan_uploads(db=services.db, storage=storage, min_age=0) == 0:
            assert time.monotonic() < deadline, "the orphan was never removed"
            time.sleep(0.1)
        assert s3_bucket.keys() == []


@pytest.mark.parametrize(
    ("code", "status", "operation", "kind"),
    [
        ("AccessDenied", 403, "put_object", "denied"),
        ("InvalidAccessKeyId", 403, "upload_part", "denied"),
        ("SignatureDoesNotMatch", 403, "head_bucket", "denied"),
        ("NoSuchBucket", 404, "put_object", "no_bucket"),
        ("404", 404, "head_bucket", "no_bucket"),
        ("NoSuchKey", 404, "get_object", "not_found"),
        ("NoSuchUpload", 404, "upload_part", "not_found"),
        ("InternalError", 500, "complete_multipart_upload", "server"),
        ("SlowDown", 503, "put_object", "server"),
        ("InvalidRange", 416, "get_object", "other"),
    ],
)
def test_store_errors_are_sorted_by_kind(code: str, status: int, operation: str, kind: str) -> None:
    """What moto cannot be made to answer (it takes any credentials) sorted as the real stores answer."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from filejobs.object_storage.client import error_kind

    error = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)
    assert error_kind(error, operation) == kind
    assert error_kind(EndpointConnectionError(endpoint_url="http://x"), operation) == "unreachable"
    assert error_kind(NoCredentialsError(), operation) == "denied"
