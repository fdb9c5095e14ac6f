"""A ``PATCH`` body appended to a locked upload, durably.

Bytes are buffered to :data:`WRITE_CHUNK` and written in a worker thread. Without
``Upload-Checksum``, what arrived is kept when the body ends early (the client went away, it sent
nothing for ``idle_timeout`` s, the server is shutting down): it is fdatasynced and its offset
recorded, so the client resumes from there; a long body is also checkpointed every
``checkpoint`` bytes (a server killed mid-PATCH loses at most that much). With a checksum, the
chunk is kept whole (verified) or not at all (discarded: 460, or nothing on an early end).

Alongside, the SHA-256 of the whole file is kept in memory per upload (:class:`Hashes`), so a
completed upload need not be read again to hash it, unless this process did not see every byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from filejobs.errors import (
    ChecksumMismatch,
    ClientGone,
    InsufficientStorage,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
)
from filejobs.shutdown import RETRY_AFTER, Shutdown
from filejobs.tus.protocol import Checksum
from filejobs.tus.store import OpenUpload

WRITE_CHUNK = 1024 * 1024
#: Batches queued for the writer while the next one fills.
IN_FLIGHT = 3
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class Hashes:
    """The running SHA-256 of uploads this process has seen from their first byte (bounded LRU)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, upload_id: str, offset: int) -> Any | None:
        """The hash of the first ``offset`` bytes (removed from the cache), or None if unknown."""
        with self._lock:
            item = self._items.pop(upload_id, None)
        if offset == 0:
            return hashlib.sha256()
        if item is None or item[0] != offset:
            return None
        return item[1]

    def put(self, upload_id: str, offset: int, hasher: Any) -> None:
        with self._lock:
            self._items[upload_id] = (offset, hasher)
            self._items.move_to_end(upload_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@dataclass
class Appended:
    """What a PATCH stored: the upload's new offset (durable), and why the body ended early."""

    offset: int
    problem: Exception | None = None


Batch = tuple[list[bytes], int | None]  # pieces, and the offset to commit after writing them


class _Writer:
    """Writes batches in order, each in a worker thread, while the next one fills: up to
    :data:`IN_FLIGHT` wait, so the socket keeps being read during a write. An error of the
    writer (a full disk) surfaces at the next :meth:`put` or at :meth:`drain`."""

    def __init__(self, write: Callable[[list[bytes], int | None], None]) -> None:
        self._write = write
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=IN_FLIGHT)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            await to_thread.run_sync(self._write, *item)
            item = None  # hold no batch while waiting for the next

    async def put(self, item: Batch | None) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        if self._task.done():
            self._task.result()
        put = asyncio.ensure_future(self._queue.put(item))
        try:
            done, _ = await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            put.cancel()
            raise
        if put not in done:
            put.cancel()
            self._task.result()

    async def drain(self) -> None:
        """Wait until everything put is written (raises the writer's error)."""
        if self._task is not None:
            await self.put(None)
            task, self._task = self._task, None
            await task

    async def cancel(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _whole(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` to its end even if this task is cancelled meanwhile (the idle timeout, a
    shutdown), then let the cancellation through: a batch is either handed to the writer and
    counted, or neither, so a recorded offset never counts bytes that were not written."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


async def append_body(
    upload: OpenUpload,
    body: AsyncIterator[bytes],
    *,
    room: int,
    checksum: Checksum | None,
    hashes: Hashes,
    checkpoint: int,
    idle_timeout: float,
    shutdown: Shutdown | None = None,
) -> Appended:
    """Append ``body`` to ``upload`` (at most ``room`` bytes: 413 past it, nothing of this body kept).

    Returns the new durable offset, with ``problem`` set when the body ended early (the client
    gone: :class:`ClientGone`; idle: 408; shutdown: 503) after what arrived was kept; raises
    460 on a checksum mismatch and 507 on a full disk (the chunk discarded)."""
    start = upload.info.offset
    hasher = hashes.take(upload.info.id, start)
    chunk_hash = checksum.hasher() if checksum is not None else None
    received = 0  # bytes of this body
    queued = 0  # of which handed to the writer
    since_checkpoint = 0
    pieces: list[bytes] = []
    buffered = 0
    loop = asyncio.get_running_loop()

    def write(batch: list[bytes], commit_to: int | None) -> None:
        upload.write(batch)
        for piece in batch:
            if hasher is not None:
                hasher.update(piece)
            if chunk_hash is not None:
                chunk_hash.update(piece)
        if commit_to is not None:
            upload.commit(commit_to)

    writer = _Writer(write)

    async def flush(*, commit: bool = False) -> None:
        """Hand the buffer to the writer; ``commit`` (or a checkpoint due) records the offset."""
        nonlocal pieces, buffered, queued, since_checkpoint
        batch, size = pieces, buffered
        pieces, buffered = [], 0
        queued += size
        since_checkpoint += size
        commit = commit or (checksum is None and since_checkpoint >= checkpoint)
        if size or commit:
            await writer.put((batch, start + queued if commit else None))
        if commit:
            since_checkpoint = 0

    async def keep_what_arrived(problem: Exception) -> Appended:
        """The body ended early: without a checksum, keep its bytes; with one, drop them."""
        if checksum is None:
            await flush(commit=True)
            await writer.drain()
            if hasher is not None:
                hashes.put(upload.info.id, upload.info.offset, hasher)
        else:
            await writer.cancel()
            await to_thread.run_sync(upload.discard)
        return Appended(upload.info.offset, problem)

    try:
        try:
            async with asyncio.timeout(loop.time() + idle_timeout) as idle:
                async for data in body:
                    if not data:
                        continue
                    received += len(data)
                    if received > room:
                        raise PayloadTooLarge(
                            f"The chunk goes past the upload's end (or the size limit): {room} more "
                            "bytes may be sent; nothing of this chunk was kept.",
                        )
                    pieces.append(data)
                    buffered += len(data)
                    if buffered >= WRITE_CHUNK:
                        await _whole(flush())
                    idle.reschedule(loop.time() + idle_timeout)
                    deadline = shutdown.upload_deadline if shutdown is not None else None
                    if deadline is not None and loop.time() >= deadline:
                        return await keep_what_arrived(
                            ServiceUnavailable(
                                "The server is shutting down; resume the upload from Upload-Offset.",
                                headers={"Retry-After": RETRY_AFTER, "Connection": "close"},
                            )
                        )
        except TimeoutError:
            return await keep_what_arrived(
                RequestTimeout(
                    f"The PATCH body sent nothing for {idle_timeout:g} seconds; resume from Upload-Offset.",
                    headers={"Connection": "close"},
                )
            )
        except ClientGone as gone:
            return await keep_what_arrived(gone)
        if checksum is None:
            await flush(commit=True)
            await writer.drain()
        else:
            await flush()
            await writer.drain()
            if chunk_hash is not None and chunk_hash.digest() != checksum.digest:
                await to_thread.run_sync(upload.discard)
                raise ChecksumMismatch(
                    f"The chunk's {checksum.algorithm} does not match Upload-Checksum; it was "
                    "discarded: send it again.",
                )
            await to_thread.run_sync(upload.commit, start + queued)
    except OSError as exc:
        await writer.cancel()
        await asyncio.shield(to_thread.run_sync(upload.discard))
        if exc.errno in DISK_FULL:
            raise InsufficientStorage(
                "The server has no room for this chunk right now; resume later.",
                headers={"Retry-After": "60"},
            ) from None
        raise
    except BaseException as exc:
        await asyncio.shield(writer.cancel())
        if isinstance(exc, PayloadTooLarge) and upload.info.offset != start:  # checkpointed: undo
            upload.info.offset = start
            await asyncio.shield(to_thread.run_sync(upload.save))
        await asyncio.shield(to_thread.run_sync(upload.discard))
        raise
    if hasher is not None:
        hashes.put(upload.info.id, upload.info.offset, hasher)
    return Appended(upload.info.offset)
