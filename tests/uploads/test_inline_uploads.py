"""Small uploads kept in the database (issue 20): a small file that arrives whole is a row of
``upload_blobs`` committed in its job's transaction, not a file of its own; jobs read it, content
is shared per key as files are, and its bytes go with the last job that names them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import select

from filejobs import storage as storage_module
from filejobs.app import create_app
from filejobs.db import Database
from filejobs.jobs import inline_uploads
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.migrate import downgrade, upgrade
from filejobs.models import StoredFile, UploadBlob
from filejobs.services import Services
from filejobs.storage import NODE, LocalStorage, LocalUploadSink, remove_stale_scratch
from filejobs.testing import post_file, submit
from tests.conftest import burst_worker, files_under, make_settings
from tests.jobs.helpers import row
from tests.uploads.helpers import assert_nothing_left

CONTENT = b"a small text file, kept in the database\n"


def blobs(db: Database) -> dict[str, bytes]:
    with db.read() as session:
        return {blob.storage_key: bytes(blob.data) for blob in session.exec(select(UploadBlob)).all()}


def test_a_small_upload_is_a_row_of_its_job_s_transaction_and_no_file(
    client: TestClient, services: Services, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touched: list[str] = []
    real_open, real_fsync = LocalUploadSink._open, storage_module.os.fsync

    def spy_open(sink: LocalUploadSink) -> int:
        touched.append("open")
        return real_open(sink)

    def spy_fsync(fd: int) -> None:
        touched.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(LocalUploadSink, "_open", spy_open)
    monkeypatch.setattr(storage_module.os, "fsync", spy_fsync)
    job_id = submit(client, CONTENT)["id"]
    assert touched == []  # no file created, no file or directory fsynced
    key = f"inline/{job_id}"
    assert row(services.db, job_id).storage_key == key
    assert blobs(services.db) == {key: CONTENT}
    assert files_under(data_dir) == []  # nothing in uploads/, tmp/ or scratch/
    with services.db.read() as session:
        stored = session.exec(select(StoredFile)).one()
    assert (stored.storage_key, stored.sha256) == (key, hashlib.sha256(CONTENT).hexdigest())


def test_a_job_reads_its_input_from_the_database_and_leaves_no_scratch(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    job_id = submit(client, CONTENT, processor="upper")["id"]
    inspected = submit(client, CONTENT + b"more\n", processor="inspect")["id"]
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}/result").content == CONTENT.upper()
    body = client.get(f"/v1/jobs/{inspected}").json()
    assert body["status"] == "succeeded", body
    assert body["result"]["size"] == len(CONTENT) + 5, body
    assert body["result"]["sha256"] == hashlib.sha256(CONTENT + b"more\n").hexdigest()
    assert list((data_dir / "scratch").iterdir()) == []  # the copies went with their attempts
    assert [p.relative_to(data_dir).parts[0] for p in files_under(data_dir)] == ["outputs"]


def test_the_threshold_and_turning_it_off(tmp_path: Path) -> None:
    """Up to ``inline_upload_bytes``: a row; one byte more, or with the setting at 0: a file."""
    for limit, size, inline in ((64, 64, True), (64, 65, False), (0, 10, False)):
        data_dir = tmp_path / f"{limit}-{size}"
        settings = make_settings(data_dir, inline_upload_bytes=limit)
        with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
            services: Services = client.app_state["services"]
            job_id = submit(client, b"x" * size)["id"]
            assert (row(services.db, job_id).storage_key == f"inline/{job_id}") is inline
            assert (data_dir / "uploads" / job_id).exists() is not inline
            assert len(blobs(services.db)) == int(inline)
            burst_worker(services).drain()
            assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_a_streamed_upload_is_a_file_however_small(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    """Only a file that arrives whole (one final write) is held, so only such a file is a row."""
    storage = services.storage
    assert isinstance(storage, LocalStorage)
    sink = storage.open_upload()

    async def run() -> None:
        await sink.write(b"first ")
        assert sink.held_bytes is None
        await sink.write(b"last", final=True)
        assert sink.held_bytes is None
        await sink.abort()

    asyncio.run(run())
    held = storage.open_upload()

    async def hold() -> None:
        await held.write(b"whole", final=True)
        assert held.held_bytes == b"whole"
        await held.abort()
        assert held.held_bytes is None

    asyncio.run(hold())


def test_content_is_shared_and_goes_with_its_last_job(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    first = submit(client, CONTENT)["id"]
    services.committer.known.forget("", hashlib.sha256(CONTENT).hexdigest())  # not the skip path
    second = submit(client, CONTENT, processor="upper")["id"]
    key = f"inline/{first}"
    assert row(services.db, second).storage_key == key
    assert blobs(services.db) == {key: CONTENT}  # the second upload inserted no blob of its own

    assert client.delete(f"/v1/jobs/{first}").status_code == 204
    assert blobs(services.db) == {key: CONTENT}  # still the second job's input
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{second}/result").content == CONTENT.upper()

    assert client.delete(f"/v1/jobs/{second}").status_code == 204
    assert blobs(services.db) == {}
    with services.db.read() as session:
        assert session.exec(select(func.count()).select_from(StoredFile)).one() == 0
    # The content is new again: stored again, under the new job's key.
    third = submit(client, CONTENT)["id"]
    assert blobs(services.db) == {f"inline/{third}": CONTENT}


def test_a_refused_small_upload_leaves_no_blob(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, services: Services
) -> None:
    assert post_file(client, CONTENT, processor="no-such-processor").status_code == 422
    assert post_file(client, b"\x89PNG\r\n\x1a\n not really", processor="upper").status_code == 415
    assert blobs(services.db) == {}
    assert_nothing_left(client, data_dir, dispatcher)


def test_a_failed_transaction_keeps_neither_row_nor_blob(
    client: TestClient,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The blob is inserted in the job's transaction: when that fails after the blob's insert,
    neither is kept, and the client gets a problem answer, not a 202."""
    from filejobs.jobs import submit as submit_module

    real_insert = inline_uploads.insert_blob

    def insert_then_fail(session: object, key: str, data: bytes) -> None:
        real_insert(session, key, data)  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(submit_module.inline_uploads, "insert_blob", insert_then_fail)
    response = post_file(client, CONTENT)
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert blobs(services.db) == {}
    assert_nothing_left(client, data_dir, dispatcher)


def test_a_deleted_input_fails_its_job_as_missing(client: TestClient, services: Services) -> None:
    job_id = submit(client, CONTENT, processor="upper")["id"]
    with services.db.write() as session:
        session.exec(UploadBlob.__table__.delete())  # type: ignore[attr-defined]
    burst_worker(services).drain()
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "input_missing"


def test_stale_scratch_of_dead_processes_goes(tmp_path: Path) -> None:
    """This node's scratch of a dead process goes at once; another node's (a shared data directory)
    once older than the age; a live process's stays however old (its job may still run)."""
    root = tmp_path / "scratch"
    root.mkdir()
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    ours = root / f"job.1@{NODE}-{os.getpid()}"
    theirs = root / f"job.1@{NODE}-{dead_pid}"
    folder = root / f"job.2@{NODE}-{dead_pid}"
    other_node = root / f"job.1@elsewhere-{dead_pid}"
    for path in (ours, theirs, other_node):
        path.write_bytes(b"x")
    folder.mkdir()
    (folder / "input").write_bytes(b"x")
    assert remove_stale_scratch(root, max_age=3600) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted([ours.name, other_node.name])
    old = time.time() - 7200
    for path in (ours, other_node):
        os.utime(path, (old, old))
    # The sweeper's pass over temp files takes the scratch along.
    assert LocalStorage(tmp_path).remove_stale_temp(3600) == 1
    assert [p.name for p in root.iterdir()] == [ours.name]


def test_downgrading_below_the_blobs_refuses_to_lose_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    db = Database(url)
    try:
        with db.write() as session:
            inline_uploads.insert_blob(session, "inline/x", b"kept")
    finally:
        db.dispose()
    with pytest.raises(RuntimeError, match="lose their bytes"):
        downgrade(url, "0009")
    db = Database(url)
    try:
        assert blobs(db) == {"inline/x": b"kept"}
        with db.write() as session:
            session.exec(UploadBlob.__table__.delete())  # type: ignore[attr-defined]
    finally:
        db.dispose()
    downgrade(url, "0009")


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_each_claim_reads_its_own_job_s_bytes(tmp_path: Path, database: str) -> None:
    """Many inline uploads at once, claimed one by one and in a batch of light jobs (SQLite and
    PostgreSQL): each job runs on exactly its own bytes; deleting the jobs deletes every blob."""
    from tests.services import fresh_postgres_database

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database()) if database == "postgresql" else None
        overrides = {"database_url": url} if url else {}
        settings = make_settings(tmp_path / "data", rate_limit=0, **overrides)
        client = stack.enter_context(TestClient(create_app(settings, dispatcher=InMemoryDispatcher())))
        services: Services = client.app_state["services"]
        contents = [f"file {index}\n".encode() * (index + 1) for index in range(12)]
        ids = [
            submit(client, content, processor="inspect" if i % 2 else "upper")["id"]
            for i, content in enumerate(contents)
        ]
        assert len(blobs(services.db)) == len(contents)
        burst_worker(services).drain()
        for job_id, content in zip(ids, contents, strict=True):
            body = client.get(f"/v1/jobs/{job_id}").json()
            assert body["status"] == "succeeded", body
            if body["processor"] == "inspect":
                assert body["result"]["sha256"] == hashlib.sha256(content).hexdigest()
            else:
                assert client.get(f"/v1/jobs/{job_id}/result").content == content.upper()
        for job_id in ids:
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert blobs(services.db) == {}


def test_a_light_job_in_the_worker_s_thread_reads_its_input_from_memory(
    client: TestClient, services: Services, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inspect`` runs in the worker's own thread: its input is a file in memory, not in scratch/;
    a job run in the child process gets a real file there (another process cannot see the memory)."""
    made: list[int] = []
    real_memory_file = storage_module.memory_file

    def spy(data: bytes) -> int | None:
        fd = real_memory_file(data)
        assert fd is not None
        made.append(fd)
        return fd

    monkeypatch.setattr(storage_module, "memory_file", spy)
    inspected = submit(client, CONTENT, processor="inspect")["id"]
    burst_worker(services).drain()
    body = client.get(f"/v1/jobs/{inspected}").json()
    assert body["status"] == "succeeded", body
    assert body["result"]["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    assert len(made) == 1
    with contextlib.suppress(FileNotFoundError):  # closed with its workspace (its number may be reused)
        assert not os.readlink(f"/proc/self/fd/{made[0]}").startswith("/memfd:filejobs-input")
    assert not (data_dir / "scratch").exists()  # no file was made for it
    upper = submit(client, b"for the child\n", processor="upper")["id"]
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{upper}/result").content == b"FOR THE CHILD\n"
    assert len(made) == 1  # the child's input was a scratch file (gone now)
    assert list((data_dir / "scratch").iterdir()) == []
