"""A large upload is written around the page cache (``O_DIRECT``, :mod:`filejobs.direct_io`) where
the file system allows it, and buffered where it does not: the same bytes, the same SHA-256, the
same errors, nothing left behind on an abort."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
from pathlib import Path

import pytest

from filejobs import direct_io
from filejobs.direct_io import STAGE_BYTES, DirectWriter
from filejobs.storage import SMALL_WRITE, LocalStorage, LocalUploadSink

PIECE = 256 * 1024 - 7  # odd-sized pieces: nothing lines up with the staging buffer by chance


def direct_supported(path: Path) -> bool:
    fd = os.open(path / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return DirectWriter.open(fd, 0) is not None
    finally:
        os.close(fd)
        os.unlink(path / "probe")


def pieces_of(data: bytes, size: int = PIECE) -> list[memoryview]:
    view = memoryview(data)
    return [view[i : i + size] for i in range(0, len(data), size)]


def chunks_of(data: bytes) -> list[list[memoryview]]:
    """``data``'s pieces in chunks as the upload receiver hands them over: each at least
    :data:`STAGE_BYTES` (its ``WRITE_CHUNK``), the last one whatever is left."""
    chunks: list[list[memoryview]] = [[]]
    for piece in pieces_of(data):
        if sum(len(p) for p in chunks[-1]) >= STAGE_BYTES:
            chunks.append([])
        chunks[-1].append(piece)
    return chunks


def upload(sink: LocalUploadSink, data: bytes, *, first: bytes = b"") -> str:
    """Write ``first`` (if any) then ``data`` in chunks (:func:`chunks_of`), hashed by the sink;
    commit as ``uploads/file``. Returns the SHA-256 the sink computed."""
    digest = hashlib.sha256()

    async def run() -> None:
        if first:
            await sink.write(first, digest=digest)
        for chunk in chunks_of(data):
            await sink.write(chunk, digest=digest)
        await sink.commit("uploads/file")

    asyncio.run(run())
    return digest.hexdigest()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "data")


@pytest.mark.parametrize(
    "size",
    [SMALL_WRITE, 4 * STAGE_BYTES, 5 * STAGE_BYTES + 12345, 3 * STAGE_BYTES - 1],
    ids=["one-write", "whole-buffers", "a-tail", "one-short"],
)
def test_the_file_and_its_hash_are_the_bytes_sent(storage: LocalStorage, size: int) -> None:
    if not direct_supported(storage.root / "tmp"):
        pytest.skip("this file system takes no O_DIRECT writes")
    data = os.urandom(size)
    sink = storage.open_upload()
    sha256 = upload(sink, data)
    assert sink._direct_tried  # the large-upload path was taken
    assert (storage.root / "uploads" / "file").read_bytes() == data
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert list((storage.root / "tmp").iterdir()) == []


def test_the_direct_writes_are_aligned_and_the_tail_is_not_direct(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not direct_supported(storage.root / "tmp"):
        pytest.skip("this file system takes no O_DIRECT writes")
    writes: list[tuple[int, int, bool]] = []
    real = direct_io._pwrite_all

    def recorded(fd: int, data: memoryview, offset: int) -> None:
        writes.append((offset, len(data), bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        real(fd, data, offset)

    monkeypatch.setattr(direct_io, "_pwrite_all", recorded)
    data = os.urandom(2 * STAGE_BYTES + 100)
    upload(storage.open_upload(), data)
    # The last chunk is less than a chunk: flushed (its last 100 bytes buffered), nothing left to finish.
    assert writes == [(0, STAGE_BYTES, True), (STAGE_BYTES, STAGE_BYTES, True), (2 * STAGE_BYTES, 100, False)]
    assert (storage.root / "uploads" / "file").read_bytes() == data


def test_a_file_system_without_o_direct_gets_buffered_writes(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct_io, "_set_direct", lambda fd, on: False)  # EINVAL from F_SETFL
    data = os.urandom(3 * STAGE_BYTES + 5)
    sink = storage.open_upload()
    sha256 = upload(sink, data)
    assert sink._direct_tried
    assert sink._direct is None
    assert (storage.root / "uploads" / "file").read_bytes() == data
    assert sha256 == hashlib.sha256(data).hexdigest()


def test_a_refused_direct_write_is_written_buffered(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that takes the flag but refuses the write (EINVAL): the writer turns
    O_DIRECT off and writes that buffer, and all the rest, the ordinary way."""
    if not direct_supported(storage.root / "tmp"):
        pytest.skip("this file system takes no O_DIRECT writes")
    real = direct_io._pwrite_all
    refused: list[int] = []

    def refuse_direct(fd: int, data: memoryview, offset: int) -> None:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, data, offset)

    monkeypatch.setattr(direct_io, "_pwrite_all", refuse_direct)
    data = os.urandom(3 * STAGE_BYTES + 5)
    sha256 = upload(storage.open_upload(), data)
    assert refused == [0]  # only the first: O_DIRECT is off afterwards
    assert (storage.root / "uploads" / "file").read_bytes() == data
    assert sha256 == hashlib.sha256(data).hexdigest()


def test_an_unaligned_start_stays_buffered(storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few bytes written before the first large write (the watch timer's hand-over of a slow
    start) leave the file at an unaligned offset: no direct writes for that upload."""
    opened: list[int] = []
    real_open = DirectWriter.open

    def recorded(fd: int, offset: int) -> DirectWriter | None:
        opened.append(offset)
        return real_open(fd, offset)

    monkeypatch.setattr(DirectWriter, "open", staticmethod(recorded))
    data = os.urandom(2 * STAGE_BYTES)
    sink = storage.open_upload()
    sha256 = upload(sink, data, first=b"0123456789")
    assert opened == [10]
    assert sink._direct is None
    assert (storage.root / "uploads" / "file").read_bytes() == b"0123456789" + data
    assert sha256 == hashlib.sha256(b"0123456789" + data).hexdigest()


def test_a_failed_direct_write_fails_the_upload(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write in the pool that fails (a full disk) fails the sink's next write or its commit."""
    if not direct_supported(storage.root / "tmp"):
        pytest.skip("this file system takes no O_DIRECT writes")

    def full(fd: int, data: memoryview, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io, "_pwrite_all", full)
    sink = storage.open_upload()
    with pytest.raises(OSError, match="No space left") as raised:
        upload(sink, os.urandom(3 * STAGE_BYTES))
    assert raised.value.errno == errno.ENOSPC
    asyncio.run(sink.abort())
    assert list((storage.root / "tmp").iterdir()) == []
    assert not (storage.root / "uploads" / "file").exists()


@pytest.mark.parametrize("staged", [0, 1], ids=["nothing-staged", "some-staged"])
def test_an_abort_removes_the_file(storage: LocalStorage, staged: int) -> None:
    sink = storage.open_upload()

    async def run() -> None:
        await sink.write(pieces_of(os.urandom(2 * STAGE_BYTES + staged)))
        await sink.abort()

    asyncio.run(run())
    assert list((storage.root / "tmp").iterdir()) == []
    assert sink._direct is None


def test_a_hand_over_of_less_than_a_chunk_reaches_the_file(storage: LocalStorage) -> None:
    """A slow or stalled upload's watch timer hands over less than a chunk: those bytes are in the
    file when the write returns (the staging buffers keep at most a page of them), and the direct
    writes that follow still start at aligned offsets and rewrite that page whole."""
    if not direct_supported(storage.root / "tmp"):
        pytest.skip("this file system takes no O_DIRECT writes")
    data = os.urandom(3 * STAGE_BYTES + 5000)
    cut, stall = STAGE_BYTES + 300_000, 2 * STAGE_BYTES - 5000  # the hand-over ends mid-page
    first, stalled, rest = data[:cut], data[cut:stall], data[stall:]
    sink = storage.open_upload()
    digest = hashlib.sha256()

    async def run() -> None:
        await sink.write(pieces_of(first), digest=digest)
        await sink.write(pieces_of(stalled, 1000), digest=digest)  # under a chunk: a hand-over
        [path] = list((storage.root / "tmp").iterdir())
        assert path.read_bytes() == first + stalled
        await sink.write(pieces_of(rest), digest=digest)
        await sink.commit("uploads/file")

    asyncio.run(run())
    assert (storage.root / "uploads" / "file").read_bytes() == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
