"""A real third-party tus client (tuspy, from PyPI) against a real ``filejobs serve``: a plain
upload, a connection cut mid-PATCH by a proxy, and the server killed with -9 mid-upload; each ends
in exactly one job holding the right bytes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tusclient.client as tusclient  # tuspy, the dev extra
from tusclient.storage.filestorage import FileStorage

from filejobs.testing import ServerFactory, server_factory, status_is, wait_for
from filejobs.tus import local
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.tus.proxy import CuttingProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MiB = 1024 * 1024


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    defaults = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "1"}
    with server_factory(tmp_path, tmp_path / "data", defaults) as start:
        yield start


def make_file(path: Path, size: int) -> str:
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB of bytes that are not all one value
    with open(path, "wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)
        handle.write(block[: size % len(block)])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jobs_of(client: httpx.Client) -> list[dict[str, object]]:
    items: list[dict[str, object]] = client.get("/v1/jobs").json()["items"]
    return items


def test_tuspy_uploads_a_file_and_its_job_succeeds(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server()
    path = tmp_path / "notes.txt"
    path.write_bytes(b"resumable hello\n" * 50_000)
    client = tusclient.TusClient(f"{server.base_url}/v1/uploads")
    uploader = client.uploader(
        file_path=str(path),
        chunk_size=256 * 1024,
        metadata={"filename": "notes.txt", "processor": "upper", "params": "{}"},
        upload_checksum=True,  # sha1 per chunk
    )
    uploader.upload()
    with server.client() as http:
        answer = http.head(uploader.url, headers={"Tus-Resumable": "1.0.0"})
        job_id = answer.headers["filejobs-job"].rsplit("/", 1)[1]
        job = wait_for(http, job_id, status_is("succeeded", "failed"), timeout=60)
        assert job["status"] == "succeeded", job
        assert job["file"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # type: ignore[index]
        assert http.get(f"/v1/jobs/{job_id}/result").content == path.read_bytes().upper()
        assert len(jobs_of(http)) == 1


def test_tuspy_resumes_after_the_connection_is_cut_mid_patch(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """One PATCH of the whole file; the network drops it halfway. The server keeps what arrived
    (fsynced), tuspy asks for the offset and sends only the rest."""
    server = start_server()
    size = 16 * MiB
    path = tmp_path / "scan.bin"
    digest = make_file(path, size)
    with CuttingProxy(server.port, cut_after=size // 2) as proxy:
        client = tusclient.TusClient(f"{proxy.url}/v1/uploads")
        uploader = client.uploader(
            file_path=str(path), chunk_size=size, metadata={"filename": "scan.bin"}, retries=2, retry_delay=0
        )
        uploader.upload()
        assert proxy.cuts == 1
        assert proxy.sent <= size * 1.1  # resumed, not started again
    with server.client() as http:
        answer = http.head(
            uploader.url.replace(str(proxy.port), str(server.port)), headers={"Tus-Resumable": "1.0.0"}
        )
        assert answer.headers["upload-offset"] == str(size)
        job_id = answer.headers["filejobs-job"].rsplit("/", 1)[1]
        job = wait_for(http, job_id, status_is("succeeded", "failed"), timeout=60)
        assert job["file"]["sha256"] == digest  # type: ignore[index]
        assert len(jobs_of(http)) == 1


def test_tuspy_resumes_after_the_server_is_killed_mid_upload(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """kill -9 of the server halfway; a restart on the same port; tuspy (its URL kept in its
    storage) resumes from HEAD's offset, which covers every byte it had been told was stored."""
    server = start_server()
    size = 24 * MiB
    path = tmp_path / "big.bin"
    digest = make_file(path, size)
    urls = FileStorage(str(tmp_path / "tuspy-urls.json"))
    client = tusclient.TusClient(f"{server.base_url}/v1/uploads")
    first = client.uploader(
        file_path=str(path),
        chunk_size=MiB,
        metadata={"filename": "big.bin"},
        store_url=True,
        url_storage=urls,
    )
    failed: list[BaseException] = []

    def run() -> None:
        try:
            first.upload()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    upload_dir = next_upload_dir(server.data_dir, deadline=time.monotonic() + 30)
    deadline = time.monotonic() + 60
    while local.recorded_offset(upload_dir) < size // 2:
        assert time.monotonic() < deadline, "the upload did not get halfway"
        time.sleep(0.01)
    server.kill9()
    thread.join(timeout=60)
    assert failed, "tuspy should have seen the server die"
    acknowledged = first.offset
    server.spawn()  # the same port and data directory: the URL tuspy stored stays valid
    server.wait_ready()
    second = client.uploader(
        file_path=str(path),
        chunk_size=MiB,
        metadata={"filename": "big.bin"},
        store_url=True,
        url_storage=urls,
    )
    assert second.url == first.url
    assert second.offset >= acknowledged  # every acknowledged byte survived kill -9
    assert second.offset >= size // 2 - MiB
    second.upload()
    with server.client() as http:
        answer = http.head(second.url, headers={"Tus-Resumable": "1.0.0"})
        job_id = answer.headers["filejobs-job"].rsplit("/", 1)[1]
        job = wait_for(http, job_id, status_is("succeeded", "failed"), timeout=60)
        assert job["file"]["sha256"] == digest  # type: ignore[index]
        assert len(jobs_of(http)) == 1


def next_upload_dir(data_dir: Path, *, deadline: float) -> Path:
    while True:
        # not a ".new-*" directory: an upload being created, renamed into place in a moment
        found = [
            p
            for p in (data_dir / "tus").glob("*/*")
            if not p.name.startswith(".") and (p / "info.json").exists()
        ]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "no upload was created"
        time.sleep(0.01)
