"""Upload temp files: whose they are, and which may go (issue 14, item 9).

A temp file of this node is locked by its writer for as long as the upload is in flight; one that
nobody holds locked belongs to a writer that died and goes at once (at startup, and by the
sweeper). Other nodes' temp files go by age only.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

import pytest

from filejobs import storage as storage_module
from filejobs.storage import OWN_TEMP, LocalStorage

HOUR = 3600.0


def temp_files(root: Path) -> list[str]:
    return sorted(entry.name for entry in (root / "tmp").iterdir())


def test_temp_files_are_named_for_this_node(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sink = storage.open_upload()
    asyncio.run(sink.write(b"first bytes"))
    try:
        [name] = temp_files(tmp_path)
        assert name.endswith(OWN_TEMP)
    finally:
        asyncio.run(sink.abort())
    assert temp_files(tmp_path) == []


def test_an_upload_in_flight_keeps_its_temp_file_when_another_process_starts(tmp_path: Path) -> None:
    """Another instance on the same directory (another process of ``serve --processes``, or a
    restart of one) leaves a temp file that is being written alone, however old it is."""
    writer = LocalStorage(tmp_path)
    sink = writer.open_upload()
    asyncio.run(sink.write(b"half an upload"))
    [name] = temp_files(tmp_path)
    old = time.time() - 2 * HOUR
    os.utime(tmp_path / "tmp" / name, (old, old))
    try:
        assert LocalStorage(tmp_path).remove_stale_temp(HOUR) == 0
        assert temp_files(tmp_path) == [name]
        asyncio.run(sink.write(b", the rest", final=True))
        asyncio.run(sink.commit("uploads/done"))
    finally:
        asyncio.run(sink.abort())
    assert (tmp_path / "uploads" / "done").read_bytes() == b"half an upload, the rest"
    assert temp_files(tmp_path) == []


def test_a_dead_writers_temp_file_goes_at_once_other_nodes_only_by_age(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    tmp = tmp_path / "tmp"
    dead = tmp / f"0123abcd{OWN_TEMP}"  # this node's, locked by nobody: its writer died
    dead.write_bytes(b"killed mid-upload")
    other_fresh = tmp / "4567cdef@another-node.part"
    other_fresh.write_bytes(b"another node's upload in flight")
    other_old = tmp / "89abef01@another-node.part"
    other_old.write_bytes(b"another node's, abandoned long ago")
    old = time.time() - 2 * HOUR
    os.utime(other_old, (old, old))
    assert storage.remove_stale_temp(HOUR) == 2
    assert temp_files(tmp_path) == [other_fresh.name]


def test_a_temp_file_removed_before_its_writer_locked_it_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instant between creating a temp file and locking it: a cleanup that finds it unlocked
    then removes it; the writer sees that and creates it again (its bytes are never lost)."""
    storage = LocalStorage(tmp_path)
    real_flock = fcntl.flock
    raced: list[int] = []

    def flock(fd: int, operation: int) -> None:
        if not raced and operation == fcntl.LOCK_EX:  # the writer's lock, the first time
            raced.append(fd)
            assert storage.remove_stale_temp(HOUR) == 1  # the cleanup gets in first
        real_flock(fd, operation)

    monkeypatch.setattr(storage_module.fcntl, "flock", flock)
    sink = storage.open_upload()
    asyncio.run(sink.write(b"all of it"))  # not final: a small final write is held until commit
    assert raced
    asyncio.run(sink.commit("uploads/done"))
    assert (tmp_path / "uploads" / "done").read_bytes() == b"all of it"
    assert temp_files(tmp_path) == []


def test_an_abort_during_a_write_in_flight_leaves_no_temp_file(tmp_path: Path) -> None:
    """An abort called while a write is still in its thread (e.g. one the watch timer handed
    over, creating the temp file) waits for it, then removes what it made; nothing is left."""
    import threading

    storage = LocalStorage(tmp_path)
    sink = storage.open_upload()
    opening, go_on = threading.Event(), threading.Event()
    real_open = sink._open

    def slow_open() -> int:
        opening.set()
        assert go_on.wait(10)
        return real_open()

    sink._open = slow_open  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            asyncio.run(sink.write(b"half an upload"))
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    assert opening.wait(10)  # the write is creating the temp file
    aborting = threading.Thread(target=lambda: asyncio.run(sink.abort()))
    aborting.start()
    aborting.join(0.2)
    assert aborting.is_alive()  # the abort waits for the write in flight
    go_on.set()
    writer.join(10)
    aborting.join(10)
    assert not aborting.is_alive()
    assert errors == []
    assert temp_files(tmp_path) == []
    with pytest.raises(FileNotFoundError):  # and a write after the abort fails, creating nothing
        asyncio.run(sink.write(b", the rest"))
    assert temp_files(tmp_path) == []
