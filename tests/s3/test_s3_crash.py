"""``kill -9`` of the API in the middle of a 200 MiB upload to S3: after the restart the sweeper
aborts the dangling multipart upload; no row, no object survives the grace period."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from filejobs.testing import ServerFactory, server_factory
from filejobs.testing.s3 import S3Bucket
from tests.sample_processors import ALL as TEST_PROCESSORS

pytestmark = pytest.mark.e2e

SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
BOUNDARY = "crashboundary"


@pytest.fixture
def start_server(tmp_path: Path, s3_bucket: S3Bucket) -> Iterator[ServerFactory]:
    defaults = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "1", **s3_bucket.env}
    with server_factory(tmp_path, tmp_path / "data", defaults) as start:
        yield start


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_kill9_mid_upload_leaves_nothing_after_the_grace(
    start_server: ServerFactory, s3_bucket: S3Bucket
) -> None:
    grace = {"temp_max_age": 3, "sweep_interval": 0.5}
    first = start_server(**grace)
    stop = threading.Event()

    def body() -> Iterator[bytes]:
        yield (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=big.bin\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        block = b"\x5a" * CHUNK
        for _ in range(SIZE // CHUNK):
            if stop.is_set():
                return
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it
            httpx.post(
                f"{first.base_url}/v1/jobs",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                timeout=60,
            )

    sender = threading.Thread(target=send, daemon=True)
    sender.start()

    def parts_stored() -> bool:
        uploads = s3_bucket.multipart_uploads()
        if len(uploads) != 1:
            return False
        parts = s3_bucket.client.list_parts(
            Bucket=s3_bucket.name, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
        )
        return len(parts.get("Parts", [])) >= 2

    try:
        wait_until(parts_stored, timeout=60, what="the upload's first parts in the bucket")
        first.kill9()
    finally:
        stop.set()
        sender.join(timeout=30)
    assert len(s3_bucket.multipart_uploads()) == 1, "the killed upload's multipart upload is gone already?"

    second = start_server(**grace)
    wait_until(lambda: s3_bucket.multipart_uploads() == [], timeout=30, what="the sweeper to abort it")
    assert s3_bucket.keys() == []
    with second.client() as client:
        assert client.get("/v1/jobs").json()["items"] == []
        assert client.get("/readyz").status_code == 200
