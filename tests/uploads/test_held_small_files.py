"""A small file that arrives whole is held in memory and written by the thread that commits it
(issue 20): no thread call of its own, the same guarantees (fsynced before the 202, nothing left
on any failure). Here with ``inline_upload_bytes=0``: a small file is written as a file (by default,
one of at most 16 KiB is kept in the database instead: tests/uploads/test_inline_uploads.py)."""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs import storage as storage_module
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from filejobs.settings import Settings
from filejobs.storage import HOLD_BYTES, LocalStorage, LocalUploadSink
from filejobs.testing import post_file
from tests.conftest import make_settings
from tests.uploads.helpers import assert_nothing_left, assert_problem, stored_upload


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    # These tests are of held files written as files: none kept in the database (test_inline_uploads.py).
    return make_settings(data_dir, inline_upload_bytes=0)


def temp_files(root: Path) -> list[Path]:
    return list((root / "tmp").iterdir())


def test_a_small_whole_file_is_written_only_at_its_commit(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sink = storage.open_upload()
    content = b"s" * HOLD_BYTES

    async def run() -> None:
        await sink.write([memoryview(content[:10]), memoryview(content[10:])], final=True)
        assert temp_files(tmp_path) == []  # held, not on the disk yet
        await sink.commit("uploads/held")

    asyncio.run(run())
    assert (tmp_path / "uploads" / "held").read_bytes() == content
    assert temp_files(tmp_path) == []


def test_a_larger_or_streamed_file_is_written_at_once(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    big, streamed = storage.open_upload(), storage.open_upload()

    async def run() -> None:
        await big.write(b"b" * (HOLD_BYTES + 1), final=True)
        await streamed.write(b"first")
        await streamed.write(b"last", final=True)  # not whole in one write: no holding
        assert len(temp_files(tmp_path)) == 2
        await streamed.commit("uploads/streamed")
        await big.abort()

    asyncio.run(run())
    assert (tmp_path / "uploads" / "streamed").read_bytes() == b"firstlast"
    assert temp_files(tmp_path) == []


def test_an_aborted_held_file_is_never_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path)
    sink = storage.open_upload()
    threads = 0
    real_run_sync = storage_module.to_thread.run_sync

    async def counting_run_sync(*args: object, **kwargs: object) -> object:
        nonlocal threads
        threads += 1
        return await real_run_sync(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage_module.to_thread, "run_sync", counting_run_sync)

    async def run() -> None:
        await sink.write(b"small", final=True)
        await sink.abort()

    asyncio.run(run())
    assert threads == 0  # neither the write nor the abort needed the disk
    # The committer reaching it after the abort (a cancelled request) creates nothing.
    place = sink.placer("uploads/late")
    with pytest.raises(FileNotFoundError):
        place()
    assert temp_files(tmp_path) == []
    assert not (tmp_path / "uploads" / "late").exists()


def test_a_small_upload_is_fsynced_before_its_202(
    client: TestClient, services: Services, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = storage_module.os.fsync
    main = threading.main_thread()

    def fsync(fd: int) -> None:
        assert threading.current_thread() is not main  # never on the event loop
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(storage_module.os, "fsync", fsync)
    response = post_file(client, b"tiny file\n")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert stored_upload(data_dir, job_id).read_bytes() == b"tiny file\n"
    assert len(synced) >= 2  # the file and the uploads/ directory
    assert temp_files(data_dir) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_disk_full_writing_a_held_file_is_507_and_leaves_nothing(
    client: TestClient,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    real_write = LocalUploadSink._write
    seen: list[bool] = []

    def write(self: LocalUploadSink, data: storage_module.Buffers, final: bool = False) -> None:
        real_write(self, data[:3], final)  # type: ignore[index]  # a partial file on the disk ...
        seen.append(self._fd is not None)  # (unnamed: in no directory, see test_unnamed_small_files)
        raise OSError(code, "No space left on device", str(data_dir / "tmp" / "x.part"))

    monkeypatch.setattr(LocalUploadSink, "_write", write)
    response = post_file(client, b"held then written\n")
    assert_problem(response, 507, data_dir, detail="no room")
    assert seen == [True]
    assert_nothing_left(client, data_dir, dispatcher)  # ... and gone


def test_a_refused_small_upload_touches_no_disk(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Path] = []
    real_open = LocalUploadSink._open

    def spy_open(self: LocalUploadSink) -> int:
        opened.append(self._temp)
        return real_open(self)

    monkeypatch.setattr(LocalUploadSink, "_open", spy_open)
    response = post_file(client, b"hello\n", processor="no-such-processor")
    assert response.status_code == 422, response.text
    assert opened == []
    assert_nothing_left(client, data_dir, dispatcher)
