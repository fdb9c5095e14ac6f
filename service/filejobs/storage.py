"""Where files live: uploads, processor outputs and upload temp files; the storage interface.

Two backends, chosen by ``FILEJOBS_STORAGE_URL`` (:func:`open_storage`): :class:`LocalStorage`,
one data directory (``file:///path``, the default), and
:class:`filejobs.object_storage.S3Storage`, an S3-compatible bucket (``s3://bucket/prefix``). The
service never assumes a stored file has a local path: a job reads its input through a
:class:`Workspace` (the file itself here, a scratch copy fetched from a bucket there) and stores
its output through it.

Locally, an upload is written to ``tmp/`` through an :class:`UploadSink` (large writes in worker
threads), fsynced, renamed into ``uploads/<job id>`` and the directory fsynced, so a file that has
a row is always complete. A small file held in memory until its commit is written instead as an
unnamed file in ``uploads/`` (``O_TMPFILE``), fsynced and linked under its name (:func:`open_unnamed`,
:func:`link_unnamed`), where the filesystem can. Every node of a scale-out deployment must see the
same directory.

A temp file is named ``<random>@<node>.part`` (the node: this host's name) and ``flock``-ed by its
writer until it is renamed or removed. The kernel drops the lock when the writer dies, even by
``kill -9``: a temp file of this node that nobody holds locked belongs to no upload in flight and is
removed at once (at startup and by the sweeper); other nodes' go after ``TEMP_MAX_AGE``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import functools
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from anyio import to_thread

from filejobs.direct_io import STAGE_BYTES, DirectWriter
from filejobs.ids import is_job_id, random_hex

if TYPE_CHECKING:
    from filejobs.settings import Settings

TEMP_SUFFIX = ".part"
#: This node, in the names of its temp files (a host name, made safe for a file name).
NODE = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "node"
#: How this node's temp files' names end.
OWN_TEMP = f"@{NODE}{TEMP_SUFFIX}"
#: What a sink's ``write`` takes: bytes, or pieces to write in order.
Buffers = bytes | memoryview | Sequence[bytes | memoryview]


def pieces_of(data: Buffers) -> Sequence[bytes | memoryview]:
    """``data`` as the pieces to write in order (one buffer: a piece of its own)."""
    return [data] if isinstance(data, bytes | memoryview) else data


class Digest(Protocol):
    """A running hash (``hashlib.sha256()``): what a sink's ``write`` may update as it writes."""

    def update(self, data: bytes | memoryview, /) -> None: ...


#: Bytes written between two background fdatasyncs of a large upload (see :class:`Writeback`).
SYNC_EVERY = 16 * 1024 * 1024
#: Writes smaller than this start no writeback of their own.
SMALL_WRITE = 256 * 1024
#: A file up to this size that arrives whole is held in memory until its commit writes it.
HOLD_BYTES = 64 * 1024


def _load_sync_file_range() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
_SYNC_WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writeback, do not wait


class Writeback:
    """Gets a large file onto the disk while it is still arriving, so little is left to sync at
    the end (the last byte -> 202 wait).

    Each chunk's writeback starts as soon as it is written (Linux ``sync_file_range``): the kernel
    would otherwise write nothing until the final fsync, its background threshold being a
    fraction of RAM. And once :data:`SYNC_EVERY` bytes were written since the last sync started,
    an ``fdatasync`` runs in the background (one at a time, on a small shared pool) while writes
    go on: writeback alone leaves the data in the disk's volatile cache, whose flush at the final
    fsync took a second for a 1 GiB file on a virtual disk. Nothing is synced twice.
    """

    _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="filejobs-sync")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.synced_to = 0  # bytes covered by the last fdatasync started
        self.enabled = _sync_file_range is not None
        self._sync: Future[None] | None = None

    def wrote(self, size: int) -> None:
        """Call after appending ``size`` bytes (in the writing thread)."""
        start, self.written = self.written, self.written + size
        if (
            self.enabled
            and _sync_file_range is not None
            and _sync_file_range(self.fd, start, size, _SYNC_WRITE) != 0
        ):
            self.enabled = False  # e.g. a filesystem without it: the syncs still run
        if self.written - self.synced_to >= SYNC_EVERY and (self._sync is None or self._sync.done()):
            self._reap()
            self.synced_to = self.written
            self._sync = self._pool.submit(os.fdatasync, self.fd)

    def _reap(self) -> None:
        if self._sync is not None:
            sync, self._sync = self._sync, None
            sync.result()  # an I/O error of the background sync surfaces here

    def settle(self) -> None:
        """Wait for the background sync (before the final fsync, and before closing the file)."""
        self._reap()


class StorageUnavailable(Exception):
    """The storage backend cannot be reached or refuses (an object store down, wrong credentials,
    no such bucket): an upload gets 503, a job is tried again later."""


class UploadSink(Protocol):
    """An upload being written: bytes in, then either ``commit`` or ``abort``."""

    #: The job id the file is stored under already (an object store names the object before its
    #: first byte), or None: the id is chosen when it commits.
    job_id: str | None

    @property
    def held(self) -> bool:
        """True while the whole file is held in memory and nothing of it was written: a caller
        that finds the content stored already may abort it unwritten."""
        ...

    @property
    def held_bytes(self) -> bytes | None:
        """The held file's bytes while :attr:`held` (None otherwise, or for a sink that never holds):
        a caller may keep them elsewhere (:mod:`filejobs.jobs.inline_uploads`) and abort the sink."""
        ...

    async def write(self, data: Buffers, *, final: bool = False, digest: Digest | None = None) -> None:
        """Append ``data``; with ``final``, make it durable. With ``digest``, also update it with
        ``data`` (before any later write's bytes), off the event loop where the sink writes there."""
        ...

    async def commit(self, key: str, *, sync_dir: bool = True) -> None: ...

    def placer(self, key: str) -> Callable[[], None] | None: ...

    async def abort(self) -> None: ...


class Workspace(Protocol):
    """What one attempt of a job reads and writes through (a context manager: ``close`` on exit
    removes whatever scratch it made, however the attempt ended)."""

    def fetch_input(self, key: str, keep_alive: Callable[[], None] | None = None) -> Path:
        """A local file holding the stored ``key``; FileNotFoundError when it is gone.
        ``keep_alive`` is called while a copy is made (it renews the job's lease; it raises to stop)."""
        ...

    def put_input(self, data: bytes, *, in_process: bool = False) -> Path:
        """Write ``data`` (an upload kept in the database) to this attempt's scratch, as its input:
        not durable, removed with the workspace. ``in_process``: only this process reads it (a
        light job run in the worker's own thread), so it may be a file in memory."""
        ...

    def output_dir(self, *, create: bool = True) -> Path:
        """A fresh, empty directory for this attempt's outputs (``create=False``: its path, made by
        whoever first writes there; earlier attempts' outputs are removed either way)."""
        ...

    def save_output(self, path: Path, keep_alive: Callable[[], None] | None = None) -> str:
        """Store ``path`` (inside :meth:`output_dir`); returns its key. ``keep_alive`` is called
        while a copy is made (it renews the job's lease; it raises to stop)."""
        ...

    def __enter__(self) -> Workspace: ...

    def __exit__(self, *exc: object) -> None: ...


class Storage(Protocol):
    """The storage interface the service uses: :class:`LocalStorage` or an S3 bucket."""

    #: True when uploads are written to this node's disk (its free space is checked before one).
    on_disk: bool

    def open_upload(self) -> UploadSink: ...

    def upload_key(self, job_id: str) -> str: ...

    def workspace(self, job_id: str, attempt: int) -> Workspace: ...

    def local_path(self, key: str) -> Path | None:
        """The file of ``key`` when it is a local file (None: the backend has no paths)."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_outputs(self, job_id: str, attempt: int | None = None) -> None: ...

    def delete_job_files(self, job_id: str) -> None: ...

    def check(self) -> None: ...

    def sync_uploads_dir(self) -> None: ...

    def remove_stale_temp(self, max_age: float) -> int: ...

    def remove_stale_scratch(self, max_age: float) -> int: ...

    def uploads_older_than(self, seconds: float) -> list[str]:
        """The job ids of the stored uploads written over ``seconds`` ago (orphan candidates)."""
        ...

    def outputs_older_than(self, seconds: float) -> list[str]:
        """The job ids of the stored outputs written over ``seconds`` ago (orphan candidates)."""
        ...


def upload_key(job_id: str) -> str:
    return f"uploads/{job_id}"


def open_storage(settings: Settings) -> Storage:
    """The backend ``settings.storage_url`` names (the data directory when it is empty)."""
    url = settings.storage_url.strip()
    if not url:
        return LocalStorage(settings.data_dir)
    if url.startswith("file://"):
        path = url.removeprefix("file://")
        if not path.startswith("/"):
            raise ValueError(f"FILEJOBS_STORAGE_URL {url!r}: a file URL needs an absolute path (file:///…).")
        return LocalStorage(Path(path))
    if url.startswith("s3://"):
        from filejobs.object_storage import S3Storage

        return S3Storage.from_settings(settings)
    raise ValueError(f"FILEJOBS_STORAGE_URL {url!r}: expected file:///path or s3://bucket/prefix.")


def fsync_dir(path: Path) -> None:
    """fsync a directory: the names created, renamed or removed in it are on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalUploadSink:
    """Writes to a temp file; ``commit`` makes it durable and moves it into place.

    Every file operation runs in a worker thread (the event loop never waits on the disk), one
    thread call per chunk (open on the first, write, start its writeback) and one for the commit
    (fsync, close, rename, and the directory's fsync unless a group commit does that for many).
    From a streamed upload's first large write on, the file is written around the page cache
    where the file system allows it (:class:`filejobs.direct_io.DirectWriter`, which hashes too).

    A small file that arrives whole (one ``final`` write of at most :data:`HOLD_BYTES`) is held in
    memory instead: the thread that commits it (the group committer's place pool, for all the
    uploads finishing together: :meth:`placer`) creates, writes, fsyncs and names it in one go,
    so a small upload makes no thread call of its own before its row's. It is made unnamed in its
    final directory and linked there (no temp name, lock or rename; a crash before the link leaves
    nothing), or as a temp file where the filesystem refuses unnamed files.
    """

    job_id: str | None = None

    def __init__(self, storage: LocalStorage) -> None:
        self._storage = storage
        self._temp = storage.root / "tmp" / f"{random_hex(16)}{OWN_TEMP}"
        self._fd: int | None = None
        self._synced = False
        self._writeback: Writeback | None = None
        #: Set on the first large write when the file system takes direct writes (see :meth:`_write`).
        self._direct: DirectWriter | None = None
        self._direct_tried = False
        #: A small whole file, not written yet (see the class's docstring).
        self._held: bytes | None = None
        #: True once the temp file may exist (an abort then needs the disk).
        self._created = False
        #: Set by an abort before anything was created: no file may be created after it.
        self._aborted = False
        self._state = threading.Lock()
        #: Held by a write's thread call and by the abort's: an abort called while a write is in
        #: flight (e.g. one the watch timer handed over) waits for it, then removes what it made.
        self._io = threading.RLock()
        #: Where a held file is made unnamed (``O_TMPFILE``), then linked (see :meth:`_commit`).
        self._unnamed_dir: Path | None = None
        #: True when the open file is such an unnamed one (it has no temp name to rename).
        self._unnamed = False

    @property
    def held(self) -> bool:
        return self.held_bytes is not None

    @property
    def held_bytes(self) -> bytes | None:
        return self._held if not self._created else None

    def _open(self) -> int:
        """Create the temp file, locked for as long as it is open (until renamed or removed); a
        held file being committed, unnamed in its final directory where the filesystem can."""
        if self._unnamed_dir is not None:
            fd = open_unnamed(self._unnamed_dir)
            if fd is not None:
                self._unnamed = True
                return fd
        while True:
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with contextlib.suppress(OSError):  # a filesystem without locks: its files go by age
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only while a sweep looks at it
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self._temp).st_ino == os.fstat(fd).st_ino:
                    return fd
            os.close(fd)  # a sweep found it unlocked in the instant before the lock and removed it

    def _write(self, data: Buffers, final: bool = False, digest: Digest | None = None) -> None:
        with self._io:  # an abort waits for a write in flight; a write after an abort fails
            self._write_unlocked(data, final, digest)

    def _write_unlocked(self, data: Buffers, final: bool, digest: Digest | None) -> None:
        if self._fd is None:
            with self._state:
                if self._aborted:  # e.g. a cancelled request's held file, reached by the committer
                    raise FileNotFoundError(errno.ENOENT, "the upload was aborted", str(self._temp))
                self._created = True
            self._fd = self._open()
            self._writeback = Writeback(self._fd)
        assert self._writeback is not None
        pieces = pieces_of(data)
        size = sum(len(piece) for piece in pieces)
        if not self._direct_tried and not final and size >= SMALL_WRITE:
            # The first large write of a streamed upload: from here on, around the page cache.
            self._direct_tried = True
            self._direct = DirectWriter.open(self._fd, self._writeback.written)
            if self._direct is not None:
                self._writeback.enabled = False  # no dirty pages to start writing back
        if self._direct is not None:
            written = self._direct.write(pieces, digest)
            if size < STAGE_BYTES:
                # Less than a chunk: a slow upload's hand-over (the watch timer's), or its end.
                written += self._direct.flush()
            self._writeback.wrote(written)
            if final:
                self._finish()
            return
        for piece in pieces:
            view = memoryview(piece)
            if digest is not None:  # hashed here, in the writing thread: one thread call for both
                digest.update(view)
            write_all(self._fd, view)
        if size >= SMALL_WRITE:  # small files: the final fsync is as cheap as anything
            self._writeback.wrote(size)
        else:
            self._writeback.written += size
        if final:
            self._finish()

    def _write_held(self) -> None:
        """Write the held small file to its temp file (not synced yet)."""
        held, self._held = self._held, None
        if held is not None:
            self._write(held)

    def _finish(self) -> None:
        """fsync the temp file (once); it stays open, and locked, until renamed."""
        if self._synced:
            return
        self._write_held()
        if self._fd is None:
            self._write(b"")
        assert self._fd is not None
        assert self._writeback is not None
        if self._direct is not None:
            direct, self._direct = self._direct, None
            self._writeback.written += direct.finish()
        self._writeback.settle()
        os.fsync(self._fd)
        self._synced = True

    async def write(self, data: Buffers, *, final: bool = False, digest: Digest | None = None) -> None:
        """Append ``data`` (bytes, or pieces written in order: no joining copy); with ``final``,
        also fsync the file, and with ``digest``, hash it (all in the same thread call). A small
        whole file (``final``, nothing written before, at most :data:`HOLD_BYTES`) is held until
        its commit instead."""
        if final and self._fd is None and self._held is None and not self._created:
            pieces = pieces_of(data)
            if sum(len(piece) for piece in pieces) <= HOLD_BYTES:
                self._held = b"".join(pieces)
                if digest is not None:
                    digest.update(self._held)
                return
        await to_thread.run_sync(self._write, data, final, digest)

    def _commit(self, final: Path, sync_dir: bool) -> None:
        if self._fd is None and self._held is not None:  # written now, in one go: no temp name
            self._unnamed_dir = final.parent
        self._finish()
        assert self._fd is not None
        if self._unnamed:
            link_unnamed(self._fd, final)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._temp, final)
        fd, self._fd = self._fd, None
        os.close(fd)  # the lock goes only now: a sweep never sees the temp file unlocked
        if sync_dir:
            fsync_dir(final.parent)

    async def commit(self, key: str, *, sync_dir: bool = True) -> None:
        """Make the file durable under ``key``. ``sync_dir=False`` leaves the fsync of its
        directory to the caller (:meth:`LocalStorage.sync_uploads_dir`, once for many files)."""
        await to_thread.run_sync(self._commit, self._storage.path(key), sync_dir)

    def placer(self, key: str) -> Callable[[], None]:
        """``commit(key, sync_dir=False)`` as a plain function, for a thread that commits many
        (the group committer renames each file, then fsyncs their directory once)."""
        final = self._storage.path(key)
        return lambda: self._commit(final, False)

    def _abort(self) -> None:
        with self._io:
            with self._state:
                self._aborted = True
            self._abort_unlocked()

    def _abort_unlocked(self) -> None:
        self._held = None
        if self._direct is not None:
            direct, self._direct = self._direct, None
            direct.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)
        if self._fd is not None:
            if self._writeback is not None:
                with contextlib.suppress(OSError):
                    self._writeback.settle()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    async def abort(self) -> None:
        with self._state:
            if not self._created:  # nothing reached the disk: nothing to remove, no thread call
                self._held, self._aborted = None, True
                return
        await to_thread.run_sync(self._abort)


#: Whether :func:`open_unnamed` may try ``O_TMPFILE`` (cleared the first time a filesystem refuses
#: it; the link needs ``/proc``).
_UNNAMED = {"ok": hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")}


def open_unnamed(directory: Path) -> int | None:
    """An unnamed new file in ``directory`` (``O_TMPFILE``), or None where the filesystem or the
    kernel cannot make one. It needs no temp name, lock or rename (:func:`link_unnamed` names it),
    and a crash before its link leaves nothing behind: the kernel frees it."""
    if not _UNNAMED["ok"]:
        return None
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
    try:
        try:
            return os.open(directory, flags, 0o600)
        except FileNotFoundError:  # the directory is made on first use, as a rename would
            directory.mkdir(parents=True, exist_ok=True)
            return os.open(directory, flags, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # not on this filesystem
            _UNNAMED["ok"] = False
            return None
        raise


def link_unnamed(fd: int, final: Path) -> None:
    """Give the unnamed file ``fd`` its name ``final`` (absolute): ``linkat`` of its ``/proc`` link
    with ``AT_SYMLINK_FOLLOW`` (Python uses ``linkat`` only when given a directory fd; ``linkat``
    ignores it for an absolute ``final``, so the file's own fd serves)."""
    assert final.is_absolute()
    source = f"/proc/self/fd/{fd}"
    try:
        os.link(source, final, dst_dir_fd=fd)
    except FileExistsError:  # an orphan of an earlier try that died before its row
        os.unlink(final)
        os.link(source, final, dst_dir_fd=fd)


def _remove_if_unlocked(path: str) -> bool:
    """Remove ``path`` unless a process holds it locked (an upload writing it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # write mode: NFS emulates flock with write locks
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: in flight; anything else: cannot tell, so keep it
            return False
        os.unlink(path)  # while locked: its writer's lock, had it just created it, waits for this
        return True
    finally:
        os.close(fd)


class LocalStorage:
    """Files under ``root``: ``uploads/<id>``, ``outputs/<id>/<attempt>/…``, ``tmp/*.part``."""

    on_disk = True

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        for sub in ("uploads", "outputs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        #: Jobs' copies of inputs kept in the database (made on first use).
        self.scratch_root = self.root / "scratch"

    @staticmethod
    def upload_key(job_id: str) -> str:
        return upload_key(job_id)

    def workspace(self, job_id: str, attempt: int) -> LocalWorkspace:
        return LocalWorkspace(self, job_id, attempt)

    def local_path(self, key: str) -> Path:
        return self.path(key)

    def open_upload(self) -> LocalUploadSink:
        return LocalUploadSink(self)

    def path(self, key: str) -> Path:
        if key.startswith("uploads/") and is_job_id(key[8:]):  # ours: no need to resolve symlinks
            return self.root / key
        if key.startswith("outputs/") and _is_output_dir_key(key):  # every job attempt's, twice
            return self.root / key
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError("storage key escapes the data directory")
        return path

    def key_for(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def link_file(self, path: Path, key: str, *, sync_dir: bool = True) -> None:
        """Store the finished, fsynced file ``path`` (a completed resumable upload, on this disk)
        as ``key`` by a hard link; ``sync_dir``: and fsync its directory."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, final)
        except FileExistsError:  # an orphan link of an earlier try that died before its row
            os.unlink(final)
            os.link(path, final)
        if sync_dir:
            fsync_dir(final.parent)

    def output_dir(self, job_id: str, attempt: int, *, create: bool = True) -> Path:
        """A fresh, empty directory for this attempt's outputs; earlier attempts' are removed.
        ``create=False``: only its path (the job's child makes it if the processor asks for it)."""
        job_dir = self.path(f"outputs/{job_id}")
        # Most jobs' first attempt finds none: one lstat, not rmtree's failed one and its exception.
        if os.path.lexists(job_dir):
            shutil.rmtree(job_dir, ignore_errors=True)
        path = job_dir / str(attempt)
        if create:
            path.mkdir(parents=True)
        return path

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_outputs(self, job_id: str, attempt: int | None = None) -> None:
        """Remove a job's outputs: one attempt's (and the job's folder once empty), or all."""
        job_dir = self.path(f"outputs/{job_id}")
        if attempt is None:
            shutil.rmtree(job_dir, ignore_errors=True)
            return
        shutil.rmtree(job_dir / str(attempt), ignore_errors=True)
        with contextlib.suppress(OSError):
            job_dir.rmdir()  # only succeeds when no other attempt is writing there

    def delete_job_files(self, job_id: str) -> None:
        self.delete(self.upload_key(job_id))
        self.delete_outputs(job_id)

    def check(self) -> None:
        """Raise OSError unless a file can be created, fsynced and removed in ``tmp/``."""
        probe = self.root / "tmp" / f".ready-{uuid.uuid4().hex}"
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()

    def remove_stale_temp(self, max_age: float) -> int:
        """Delete the upload temp files no upload in flight writes: this node's that no live
        process holds locked (their writer died), and any not written for ``max_age`` s; and the
        stale scratch inputs (:meth:`remove_stale_scratch`)."""
        cutoff = time.time() - max_age
        removed = 0
        for entry in os.scandir(self.root / "tmp"):
            try:
                if entry.name.endswith(OWN_TEMP):
                    removed += _remove_if_unlocked(entry.path)
                elif entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed + self.remove_stale_scratch(max_age)

    def sync_uploads_dir(self) -> None:
        """fsync ``uploads/``: makes the renames of files committed with ``sync_dir=False`` durable."""
        fsync_dir(self.root / "uploads")

    def remove_stale_scratch(self, max_age: float) -> int:
        """Remove the scratch inputs of this node's dead processes, and other nodes' older than
        ``max_age`` (jobs read a file input where it is stored; an input kept in the database that a
        job's child process reads is copied here: :func:`remove_stale_scratch`)."""
        return remove_stale_scratch(self.scratch_root, max_age)

    def uploads_older_than(self, seconds: float) -> list[str]:
        return _names_older_than(self.root / "uploads", seconds, directories=False)

    def outputs_older_than(self, seconds: float) -> list[str]:
        return _names_older_than(self.root / "outputs", seconds, directories=True)


def _names_older_than(parent: Path, seconds: float, *, directories: bool) -> list[str]:
    """The names of ``parent``'s files (or ``directories``) last changed over ``seconds`` ago."""
    cutoff = time.time() - seconds
    old = []
    for entry in os.scandir(parent):
        try:
            kind_matches = entry.is_dir() if directories else entry.is_file()
            if kind_matches and entry.stat().st_mtime < cutoff:
                old.append(entry.name)
        except FileNotFoundError:
            continue
    return old


class LocalWorkspace:
    """A job attempt on the data directory: the input is read where it is stored, the outputs are
    written where they stay (``outputs/<id>/<attempt>/``)."""

    def __init__(self, storage: LocalStorage, job_id: str, attempt: int) -> None:
        self.storage = storage
        self.job_id = job_id
        self.attempt = attempt
        self._scratch: Path | None = None
        #: The fd of an in-memory input (:func:`memory_file`), closed with the workspace.
        self._memory: int | None = None

    def fetch_input(self, key: str, keep_alive: Callable[[], None] | None = None) -> Path:
        path = self.storage.path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path

    def put_input(self, data: bytes, *, in_process: bool = False) -> Path:
        if in_process and self._memory is None:
            self._memory = memory_file(data)
            if self._memory is not None:  # no directory entry to create, journal and unlink
                return Path(f"/proc/self/fd/{self._memory}")
        path = self.storage.scratch_root / scratch_name(self.job_id, self.attempt)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        self._scratch = path
        return path

    def output_dir(self, *, create: bool = True) -> Path:
        return self.storage.output_dir(self.job_id, self.attempt, create=create)

    def save_output(self, path: Path, keep_alive: Callable[[], None] | None = None) -> str:
        return self.storage.key_for(path)  # in place: no copy to keep alive

    def __enter__(self) -> LocalWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._memory is not None:
            memory, self._memory = self._memory, None
            os.close(memory)
        if self._scratch is not None:
            scratch, self._scratch = self._scratch, None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)


@functools.cache
def _memory_files() -> bool:
    """Whether this system has files in memory that a path opens (looked at once per process)."""
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def memory_file(data: bytes) -> int | None:
    """An anonymous file in memory holding ``data`` (``memfd_create``; its path, for this process
    only, is ``/proc/self/fd/<fd>``), or None where the kernel has none. The caller closes it."""
    if not _memory_files():
        return None
    try:
        fd = os.memfd_create("filejobs-input", os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        write_all(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: A scratch entry's name: ``<job id>.<attempt>@<node>-<pid>`` (:func:`scratch_name`).
_SCRATCH_NAME = re.compile(r"(?P<job>[^@]+)@(?P<node>.+)-(?P<pid>\d+)")


def scratch_name(job_id: str, attempt: int) -> str:
    """The name of an attempt's scratch (a file or a directory) in this process of this node."""
    return f"{job_id}.{attempt}@{NODE}-{os.getpid()}"


def remove_stale_scratch(scratch_root: Path, max_age: float) -> int:
    """Remove the scratch entries (files or directories) of this node's dead processes, and those
    of other nodes (a shared data directory) older than ``max_age``; a live process's stay however
    long its job runs. Returns how many went."""
    cutoff = time.time() - max_age
    removed = 0
    try:
        entries = list(os.scandir(scratch_root))
    except FileNotFoundError:  # made on first use
        return 0
    for entry in entries:
        match = _SCRATCH_NAME.fullmatch(entry.name)
        try:
            mine = match is not None and match["node"] == NODE
            dead = mine and match is not None and not _alive(int(match["pid"]))
            if dead or (not mine and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_output_dir_key(key: str) -> bool:
    """``outputs/<job id>`` or ``outputs/<job id>/<attempt>``, as this module names them: nothing in
    it can leave the data directory, so it needs no ``resolve()`` (several ``lstat`` calls)."""
    parts = key.split("/")
    if len(parts) not in (2, 3) or not is_job_id(parts[1]):
        return False
    return len(parts) == 2 or (parts[2].isascii() and parts[2].isdigit())
