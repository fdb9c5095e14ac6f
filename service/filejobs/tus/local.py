"""Resumable uploads in the data directory: ``tus/<owner>/<upload id>/{info.json,offset,data}``.

``<owner>`` is a hash of the owning key's scope, so an upload is found only under its own key's
directory (another key gets 404 by construction). ``data`` holds the bytes; ``info.json`` the state
record, replaced atomically (written, fsynced, renamed, directory fsynced) when more than the
offset changes; ``offset`` the offset, in two checksummed slots rewritten in turn in place and
fdatasynced (the newest valid one is read; a torn write leaves the one before). The offset is
written only after ``data`` is fdatasynced up to it, so after ``kill -9`` (or a power cut) the
recorded offset's bytes are all there; bytes past it are cut off when the upload is next written.

One request at a time holds an upload: ``flock`` on its directory (dropped by the kernel when the
holder dies). A new upload's directory is made under a temporary name and renamed into place, so a
half-created upload is never seen; the owner's directory is locked while its bounds are checked and
the upload is created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

from anyio import to_thread

from filejobs.errors import Locked
from filejobs.storage import Buffers, Digest, LocalStorage, UploadSink, Writeback, fsync_dir
from filejobs.tus.store import UploadInfo, Usage, check_bounds

ID = re.compile(r"[0-9a-f]{32}")
INFO = "info.json"
DATA = "data"
#: The offset record: two slots (each in its own 4 KiB block), written in turn in place.
OFFSET = "offset"
SLOT = struct.Struct("<4sQQI")  # magic, sequence, offset, CRC-32 of the rest
SLOT_MAGIC = b"FJO1"
SLOT_SPACING = 4096
#: Seconds between two tries for a lock another request holds.
LOCK_POLL = 0.02
#: Half-created upload directories (a crash between mkdir and rename) older than this are removed.
STALE_NEW = 3600.0
HASH_BLOCK = 4 * 1024 * 1024


def owner_dir_name(owner: str) -> str:
    return hashlib.sha256(b"filejobs-tus:" + owner.encode()).hexdigest()[:32]


def _write_info(directory: Path, info: UploadInfo) -> None:
    temp = directory / f".{INFO}.{uuid.uuid4().hex}"
    data = json.dumps(dataclasses.asdict(info), separators=(",", ":")).encode()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / INFO)
    fsync_dir(directory)


def _read_info(directory: Path) -> UploadInfo | None:
    """The record: ``info.json``, its offset replaced by the newest valid slot of ``offset``."""
    try:
        raw = json.loads((directory / INFO).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    info = UploadInfo(**raw)
    newest = _read_slots(directory)
    if newest is not None:
        info.offset = newest[1]
    return info


def recorded_offset(directory: Path) -> int:
    """The offset recorded for the upload in ``directory`` (0 when there is none)."""
    info = _read_info(directory)
    return info.offset if info is not None else 0


def _slot(seq: int, offset: int) -> bytes:
    head = SLOT.pack(SLOT_MAGIC, seq, offset, 0)[:-4]
    return head + zlib.crc32(head).to_bytes(4, "little")


def _read_slots(directory: Path) -> tuple[int, int] | None:
    """(seq, offset) of the newest slot whose checksum holds (a torn write fails it)."""
    try:
        raw = (directory / OFFSET).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    best: tuple[int, int] | None = None
    for index in range(2):
        record = raw[index * SLOT_SPACING : index * SLOT_SPACING + SLOT.size]
        if len(record) < SLOT.size:
            continue
        magic, seq, offset, crc = SLOT.unpack(record)
        if magic == SLOT_MAGIC and zlib.crc32(record[:-4]) == crc and (best is None or seq > best[0]):
            best = (seq, offset)
    return best


def _make_offset_file(directory: Path) -> None:
    """The two slots' file at its full size (so a slot's write never changes its size: an
    fdatasync then writes no metadata), fsynced."""
    fd = os.open(directory / OFFSET, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, bytes(2 * SLOT_SPACING))
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(fd: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL)


class FinishedFile:
    """An :class:`~filejobs.storage.UploadSink` over a finished upload's (already fsynced) file:
    ``commit`` links it under the job's key; ``abort`` leaves it to the upload. (On the S3 backend
    an upload completes in the bucket: :mod:`filejobs.tus.s3`.)"""

    #: The job's id is chosen by the upload (recorded before the job is made), not by the sink.
    job_id: str | None = None
    held = False  # no bytes in memory
    held_bytes: bytes | None = None

    def __init__(self, source: Path, storage: LocalStorage) -> None:
        self.source = source
        self.storage = storage

    async def write(self, data: Buffers, *, final: bool = False, digest: Digest | None = None) -> None:
        raise TypeError("a finished upload takes no more bytes")

    async def commit(self, key: str, *, sync_dir: bool = True) -> None:
        await to_thread.run_sync(partial(self.storage.link_file, self.source, key, sync_dir=sync_dir))

    def placer(self, key: str) -> Callable[[], None]:
        """The group committer's step: the link (the batch fsyncs the directory once)."""
        return partial(self.storage.link_file, self.source, key, sync_dir=False)

    async def abort(self) -> None:
        return None


class LocalUpload:
    """One locked upload (see :class:`filejobs.tus.store.OpenUpload`)."""

    def __init__(self, directory: Path, info: UploadInfo, lock_fd: int, storage: LocalStorage) -> None:
        self.storage = storage
        self.directory = directory
        self.info = info
        self._lock_fd = lock_fd
        self._fd: int | None = None
        self._writeback: Writeback | None = None
        self._slots_fd: int | None = None
        self._seq = 0
        self._saved = self._fields()  # info.json's fields (but the offset) as last written

    def _data_fd(self) -> int:
        if self._fd is None:
            fd = os.open(self.directory / DATA, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if os.fstat(fd).st_size != self.info.offset:  # unacknowledged bytes of a dead request
                os.ftruncate(fd, self.info.offset)
            os.lseek(fd, self.info.offset, os.SEEK_SET)
            self._fd = fd
            self._writeback = self._new_writeback(fd)
        return self._fd

    def _new_writeback(self, fd: int) -> Writeback:
        """The disk gets the bytes while more arrive (sync_file_range, background fdatasyncs),
        so a commit has little left to flush. It counts file offsets from the upload's."""
        writeback = Writeback(fd)
        writeback.written = writeback.synced_to = self.info.offset
        return writeback

    def write(self, pieces: Sequence[bytes | memoryview]) -> None:
        fd = self._data_fd()
        size = 0
        for piece in pieces:
            view = memoryview(piece)
            size += len(view)
            while view:
                view = view[os.write(fd, view) :]
        assert self._writeback is not None
        self._writeback.wrote(size)

    def commit(self, offset: int) -> None:
        fd = self._data_fd()
        writeback = self._writeback
        if writeback is not None:
            writeback.settle()  # a background fdatasync in flight ends (its error raised)
        if writeback is None or writeback.synced_to < writeback.written:
            os.fdatasync(fd)  # else that sync covered every byte: no second disk flush
        self.info.offset = offset
        if self._fields() != self._saved:  # a length declared with this PATCH
            self._write_info()
        self._write_offset()

    def _fields(self) -> dict[str, object]:
        fields = dataclasses.asdict(self.info)
        del fields["offset"]
        return fields

    def _write_info(self) -> None:
        _write_info(self.directory, self.info)
        self._saved = self._fields()

    def _write_offset(self) -> None:
        """The offset, in place: the older slot rewritten and fdatasynced (one disk flush, no
        file made or renamed, no directory synced: a quarter of what replacing info.json costs).
        A torn write fails its checksum and the other slot, the offset before, is read."""
        if self._slots_fd is None:
            path = self.directory / OFFSET
            if not path.exists():  # an upload made before the offset file
                _make_offset_file(self.directory)
                fsync_dir(self.directory)
            newest = _read_slots(self.directory)
            self._seq = newest[0] if newest is not None else 0
            self._slots_fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self._seq += 1
        os.pwrite(self._slots_fd, _slot(self._seq, self.info.offset), (self._seq % 2) * SLOT_SPACING)
        os.fdatasync(self._slots_fd)

    def discard(self) -> None:
        if self._fd is not None:
            if self._writeback is not None:
                with contextlib.suppress(OSError):
                    self._writeback.settle()
            os.ftruncate(self._fd, self.info.offset)
            os.lseek(self._fd, self.info.offset, os.SEEK_SET)
            self._writeback = self._new_writeback(self._fd)

    def save(self) -> None:
        self._write_offset()  # first: the slot's offset is the one read
        self._write_info()

    def read(self, start: int, size: int) -> bytes:
        with open(self.directory / DATA, "rb") as handle:
            handle.seek(start)
            return handle.read(size)

    def data_path(self) -> Path:
        return self.directory / DATA

    def seal(self) -> None:
        """Nothing to put together: ``data`` holds every byte, fsynced."""

    def hash_all(self) -> str:
        digest = hashlib.sha256()
        with open(self.directory / DATA, "rb") as handle:
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def sink(self) -> UploadSink:
        return FinishedFile(self.directory / DATA, self.storage)

    def finish(self, expires_at: float) -> None:
        self.info.done = True
        self.info.expires_at = expires_at
        self._write_info()
        self._close_data()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / DATA)

    def remove(self) -> None:
        self._close_data()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _close_data(self) -> None:
        if self._slots_fd is not None:
            slots, self._slots_fd = self._slots_fd, None
            os.close(slots)
        if self._fd is not None:
            if self._writeback is not None:
                with contextlib.suppress(OSError):
                    self._writeback.settle()  # no background sync left on a closed descriptor
                self._writeback = None
            fd, self._fd = self._fd, None
            os.close(fd)

    def close(self) -> None:
        self._close_data()
        os.close(self._lock_fd)  # the lock goes with the descriptor


class LocalUploadStore:
    """Uploads under ``root`` (``<data dir>/tus``), handed to ``storage`` once complete."""

    def __init__(self, root: Path, storage: LocalStorage) -> None:
        self.root = root
        self.storage = storage
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, owner: str, upload_id: str) -> Path | None:
        if not ID.fullmatch(upload_id):
            return None
        return self.root / owner_dir_name(owner) / upload_id

    def create(self, info: UploadInfo, *, max_uploads: int, max_bytes: int) -> None:
        owner_dir = self.root / owner_dir_name(info.owner)
        if not owner_dir.exists():
            owner_dir.mkdir(exist_ok=True)
            fsync_dir(self.root)
        fd = os.open(owner_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the bounds hold under concurrent creations
            used = self._usage(owner_dir)
            check_bounds(used, info.length, max_uploads=max_uploads, max_bytes=max_bytes)
            temp = owner_dir / f".new-{info.id}"
            temp.mkdir()
            _make_offset_file(temp)  # made here: the rename and the directory's fsync cover it
            _write_info(temp, info)
            os.rename(temp, owner_dir / info.id)
            fsync_dir(owner_dir)
        finally:
            os.close(fd)

    def get(self, owner: str, upload_id: str) -> UploadInfo | None:
        directory = self._dir(owner, upload_id)
        return _read_info(directory) if directory is not None else None

    def open(self, owner: str, upload_id: str, *, wait: float) -> LocalUpload | None:
        directory = self._dir(owner, upload_id)
        if directory is None:
            return None
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            if not _lock(fd, wait):
                raise Locked(
                    "Another request is writing this upload; try again once it has ended.",
                    headers={"Retry-After": "1"},
                )
            info = _read_info(directory)  # read under the lock: what the last holder left
        except BaseException:
            os.close(fd)
            raise
        if info is None:  # terminated while we waited
            os.close(fd)
            return None
        return LocalUpload(directory, info, fd, self.storage)

    def _usage(self, owner_dir: Path) -> Usage:
        uploads = held = 0
        for info in self._infos(owner_dir):
            if not info.done:
                uploads += 1
                held += info.length if info.length is not None else info.offset
        return Usage(uploads, held)

    def usage(self, owner: str) -> Usage:
        return self._usage(self.root / owner_dir_name(owner))

    def _infos(self, owner_dir: Path) -> Iterator[UploadInfo]:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(owner_dir):
                if ID.fullmatch(entry.name):
                    with contextlib.suppress(ValueError, TypeError):
                        info = _read_info(Path(entry.path))
                        if info is not None:
                            yield info

    def remove_expired(self, now: float) -> int:
        removed = 0
        for owner_entry in os.scandir(self.root):
            if not owner_entry.is_dir():
                continue
            for entry in list(os.scandir(owner_entry.path)):
                path = Path(entry.path)
                if entry.name.startswith(".new-"):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < now - STALE_NEW:
                            shutil.rmtree(path, ignore_errors=True)
                    continue
                try:
                    info = _read_info(path)
                except (ValueError, TypeError):
                    info = None
                if info is None or info.expires_at > now:
                    continue
                upload = self._open_path(path)
                if upload is None:
                    continue  # a request holds it: next pass
                try:
                    if upload.info.expires_at <= now:
                        upload.remove()
                        removed += 1
                finally:
                    upload.close()
        return removed

    def _open_path(self, path: Path) -> LocalUpload | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if not _lock(fd, 0):
            os.close(fd)
            return None
        info = _read_info(path)
        if info is None:
            os.close(fd)
            return None
        return LocalUpload(path, info, fd, self.storage)
