"""The durable floor: the raw ASGI sink plus what any durable content-addressed store must do.

It reads the request body like :mod:`scripts.bench.apps.raw_asgi` (same uvicorn, same flags) and
also computes the SHA-256 of the whole body and writes the body to a new file in
``TUTORIAL_DATA_DIR`` (the benchmark puts it on the same filesystem as filejobs' data directory),
fsyncing the file and its directory before the 202. No parsing, no database, no limits, no temp
file and rename: an upload that must be hashed and durable goes no faster than this through
uvicorn on this machine. A POST is answered ``{"bytes": <body bytes>, "sha256": <of the body>}``,
anything else an empty 200.

The cheapest of the arrangements measured (docs/performance.md, "round three"): the pieces go to
a thread in 1 MiB batches; one executor call per batch hashes and writes them (the calls one after
the other, at most :data:`IN_FLIGHT` batches queued) with filejobs' own direct writer
(:class:`filejobs.direct_io.DirectWriter`: ``O_DIRECT`` through two aligned staging buffers, the
bytes hashed there, each full buffer written by a pool thread while the other fills), and an
``fdatasync`` in the background every :data:`SYNC_EVERY` bytes, so the final fsync has little
left. Measured against it: buffered writes with their writeback started at once
(``sync_file_range``, what filejobs did before; the fallback here where the file system refuses
``O_DIRECT``) were much slower, hashing on the event loop instead of in the writing thread as
fast for 0.2-0.3 s more CPU per GiB, one thread fed piece by piece much slower.

Run: ``uvicorn scripts.bench.apps.durable_sink:app`` with ``TUTORIAL_DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filejobs.direct_io import DirectWriter
from scripts.bench.apps.raw_asgi import lifespan

Scope = dict[str, Any]
DATA_DIR = Path(os.environ.get("TUTORIAL_DATA_DIR", "durable-data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)
MiB = 1024 * 1024
BATCH = MiB
IN_FLIGHT = 4
SYNC_EVERY = 16 * MiB
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


SYNC_FILE_RANGE = _sync_file_range()


class DurableFile:
    """A new file written by one executor call at a time (the calls are chained): direct writes,
    or buffered ones with their writeback started as they go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.written = self.synced_to = 0
        self.sync: threading.Thread | None = None
        self.direct = DirectWriter.open(self.fd, 0)  # None: a file system without O_DIRECT

    def write(self, batch: list[bytes], digest: hashlib._Hash) -> None:
        start = self.written
        if self.direct is not None:
            self.written += self.direct.write(batch, digest)
            self._sync_now_and_then()
            return
        for piece in batch:
            digest.update(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(self.fd, view) :]
            self.written += len(piece)
        if SYNC_FILE_RANGE is not None:
            SYNC_FILE_RANGE(self.fd, start, self.written - start, _SYNC_FILE_RANGE_WRITE)
        self._sync_now_and_then()

    def _sync_now_and_then(self) -> None:
        if self.written - self.synced_to >= SYNC_EVERY and (self.sync is None or not self.sync.is_alive()):
            self.synced_to = self.written
            self.sync = threading.Thread(target=os.fdatasync, args=(self.fd,), daemon=True)
            self.sync.start()

    def finish(self) -> None:
        """fsync the file and its directory."""
        if self.direct is not None:
            direct, self.direct = self.direct, None
            direct.finish()
        if self.sync is not None:
            self.sync.join()
        os.fsync(self.fd)
        directory = os.open(DATA_DIR, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self, remove: bool) -> None:
        if self.direct is not None:
            self.direct.close()
        if self.sync is not None:
            self.sync.join()
        os.close(self.fd)
        if remove:  # the client left: nothing was stored
            self.path.unlink()


async def store(receive: Any, out: DurableFile) -> tuple[int, str] | None:
    """Hash and write the body in 1 MiB batches in the executor; None if the client left."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    writes: list[asyncio.Future[None]] = []

    async def write_after(previous: asyncio.Future[None] | None, batch: list[bytes]) -> None:
        if previous is not None:
            await previous
        await loop.run_in_executor(None, out.write, batch, digest)

    batch: list[bytes] = []
    batched = count = 0
    more = True
    try:
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if body:
                batch.append(body)
                batched += len(body)
                count += len(body)
            if batch and (batched >= BATCH or not more):
                writes.append(asyncio.ensure_future(write_after(writes[-1] if writes else None, batch)))
                batch, batched = [], 0
                if len(writes) > IN_FLIGHT:
                    await writes.pop(0)
        for write in writes:
            await write
    finally:  # the file is closed only once no write runs (a client that left, an error)
        await asyncio.gather(*writes, return_exceptions=True)
    await loop.run_in_executor(None, out.finish)
    return count, digest.hexdigest()


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":  # e.g. the benchmark's readiness probe: nothing to store
        await answer(send, 200, b"{}")
        return
    out = DurableFile(DATA_DIR / uuid.uuid4().hex)
    result = None
    try:
        result = await store(receive, out)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, out.close, result is None)
    if result is None:
        return
    count, sha256 = result
    await answer(send, 202, b'{"bytes": %d, "sha256": "%s"}' % (count, sha256.encode()))


async def answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
