"""Writing a large upload around the page cache (``O_DIRECT``), through one aligned staging buffer.

A buffered write copies every byte into the page cache, and the kernel then tracks, writes back
and frees each page; for a 1 GiB upload the writing thread spent 0.4-0.6 s of kernel time per GiB
on that (docs/performance.md, "round three"). With ``O_DIRECT`` the disk reads the bytes from the
process's memory instead, but only from an aligned buffer, at an aligned file offset, in aligned
lengths. :class:`DirectWriter` copies the pieces of a chunk into a page-aligned staging buffer
(anonymous ``mmap``), hashes them there (the bytes are in the CPU's cache right after the copy)
and writes the buffer each time it is full; what is left at the end (less than a buffer) is
written the ordinary way, after ``O_DIRECT`` is turned off again.

Nothing changes for durability: the caller still fsyncs the file before it is renamed (direct
writes may sit in the disk's volatile cache until then), and only what was written is ever
reported. Where the file system refuses ``O_DIRECT`` (tmpfs, some network file systems: ``EINVAL``
when it is turned on, or on the first write), the writer is not used and the file is written
buffered, as before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

#: File offsets and lengths of direct writes are multiples of this (the page size; logical block
#: sizes are 512 or 4096 bytes).
ALIGN = 4096
#: The staging buffer: one direct write each time it is full.
STAGE_BYTES = 1024 * 1024


class Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def _set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for ``fd``; False if the file system does not have it."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


class DirectWriter:
    """Appends to ``fd`` (open for writing, ``offset`` bytes written so far) with direct writes of
    :data:`STAGE_BYTES`. Use :meth:`open`; one thread at a time.

    Two staging buffers: while one is written (a direct write waits for the disk) by a thread of a
    small shared pool, the caller's thread copies and hashes into the other."""

    _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="filejobs-direct")

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.offset = offset  # where the next buffer goes
        self._stages = [mmap.mmap(-1, STAGE_BYTES), mmap.mmap(-1, STAGE_BYTES)]
        self._views = [memoryview(stage) for stage in self._stages]
        self._view = self._views[0]
        self._staged = 0
        self._on_file = 0  # of the staged bytes, how many a flush wrote already (buffered)
        self._direct = True
        self._pending: Future[None] | None = None

    @classmethod
    def open(cls, fd: int, offset: int) -> DirectWriter | None:
        """A writer for ``fd`` whose first ``offset`` bytes are written, or None when the file
        system takes no direct writes or ``offset`` is not aligned (the caller writes buffered)."""
        if offset % ALIGN or not hasattr(os, "O_DIRECT") or not _set_direct(fd, True):
            return None
        return cls(fd, offset)

    def write(self, pieces: Sequence[bytes | memoryview], digest: Digest | None) -> int:
        """Stage ``pieces`` (hashing them with ``digest``), writing the buffer each time it fills.
        Returns how many bytes reached the file (whole buffers)."""
        written = 0
        for piece in pieces:
            view = memoryview(piece).cast("B")
            while view:
                take = min(len(view), STAGE_BYTES - self._staged)
                end = self._staged + take
                self._view[self._staged : end] = view[:take]
                if digest is not None:
                    digest.update(self._view[self._staged : end])
                self._staged, view = end, view[take:]
                if self._staged == STAGE_BYTES:
                    self._flush_stage()
                    written += STAGE_BYTES
        return written

    def _flush_stage(self) -> None:
        """Hand the full buffer to the pool (once the previous one is written) and fill the other."""
        self._wait()
        data, offset = self._view[: self._staged], self.offset
        self._pending = self._pool.submit(self._pwrite, data, offset)
        self.offset += self._staged
        self._view = self._views[1] if self._view is self._views[0] else self._views[0]
        self._staged = self._on_file = 0

    def _pwrite(self, data: memoryview, offset: int) -> None:
        if self._direct:
            try:
                _pwrite_all(self.fd, data, offset)
                return
            except OSError as exc:  # a file system that accepted the flag but not the write
                if exc.errno != errno.EINVAL:
                    raise
                self._buffered()
        _pwrite_all(self.fd, data, offset)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # the write's error (a full disk) surfaces here

    def _buffered(self) -> None:
        if self._direct:
            self._direct = False
            _set_direct(self.fd, False)

    def flush(self) -> int:
        """Get everything staged into the file now and give the buffers' memory back (a slow or
        stalled upload: it then holds no more than a page). The aligned part is written direct;
        the last bytes of an unaligned length are written buffered and kept staged (the next
        direct write, at the aligned offset, writes them again with what follows). Returns the
        bytes the next direct write will not cover again (the aligned part)."""
        self._wait()
        aligned = self._staged - self._staged % ALIGN
        if aligned:
            self._pwrite(self._view[:aligned], self.offset)
            self.offset += aligned
            tail = self._staged - aligned
            self._view[:tail] = self._view[aligned : self._staged]
            self._staged, self._on_file = tail, 0
        if self._staged > self._on_file:
            direct = self._direct
            self._buffered()
            start = self._on_file
            _pwrite_all(self.fd, self._view[start : self._staged], self.offset + start)
            self._on_file = self._staged
            if direct:
                self._direct = _set_direct(self.fd, True)
        current = self._stages[0] if self._view is self._views[0] else self._stages[1]
        for stage in self._stages:  # anonymous pages: read back as zeros, filled before use
            keep = ALIGN if stage is current and self._staged else 0
            stage.madvise(mmap.MADV_DONTNEED, keep, STAGE_BYTES - keep)
        return aligned

    def finish(self) -> int:
        """Wait for the buffer being written, then write what is staged (buffered: its length
        need not be aligned); returns the bytes written since the last :meth:`write` returned.
        The writer is closed afterwards; the caller fsyncs the file."""
        try:
            self._wait()
            staged, start = self._staged, self._on_file
            if staged > start:
                self._buffered()
                _pwrite_all(self.fd, self._view[start:staged], self.offset + start)
            self.offset += staged
            return staged
        finally:
            self.close()

    def close(self) -> None:
        """Wait for a write in flight and drop the buffers (an abort: what was staged is lost)."""
        with contextlib.suppress(OSError):
            self._wait()
        for view, stage in zip(self._views, self._stages, strict=True):
            view.release()
            with contextlib.suppress(BufferError):
                stage.close()
