"""An upload streamed into the bucket as it arrives.

Bytes are gathered (as the receiver's views, not copied) until a part's worth is there (exactly
``part_size`` bytes: the piece that crosses the line is cut in two views), then sent at once (read
where they are) as one part of an S3 multipart upload from a worker thread. While
``parts_in_flight`` parts are in flight, :meth:`S3UploadSink.write` waits, and so does the receiver:
nothing fills meanwhile, so an upload holds at most ``parts_in_flight`` parts (those in flight, or
fewer and the one filling), and the store always has one less than that, or that many, to work on.
A file smaller than one part goes up in a single PUT.
:meth:`S3UploadSink.commit` sends the rest and completes the object: the caller commits the row
only after that, so a ``202`` still means the file is durably stored. :meth:`S3UploadSink.abort`
(any failure, a client gone) waits for the parts in flight, then aborts the multipart upload (or
deletes the object it completed).

The object's key holds the job's id, chosen when the upload opens (an object cannot be renamed):
``uploads/<job id>``, as on the local backend.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import zlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from anyio import to_thread

from filejobs.ids import new_job_id
from filejobs.storage import Buffers, Digest, StorageUnavailable, pieces_of, upload_key

if TYPE_CHECKING:
    from filejobs.object_storage.store import S3Storage

log = logging.getLogger(__name__)

Piece = bytes | memoryview


class PartBody:
    """The pieces of one part as one seekable file that botocore sends (and, on a retry, sends again
    from the start), so a part in flight is held once: as the request's chunks.

    :meth:`read` answers a view of the piece at the position (at most ``size`` bytes; a short read
    at a piece's end), not a copy: urllib3 passes each block it reads straight to the socket, so
    the bytes of a part are copied only by the kernel. Nothing else reads the body: the part's
    CRC32 goes with it (:func:`crc32`) and its payload is not hashed for the signature."""

    def __init__(self, pieces: list[Piece]) -> None:
        self._pieces = [memoryview(piece).cast("B") for piece in pieces]
        self._size = sum(len(piece) for piece in self._pieces)
        self._pos = 0
        self._index = 0  # the piece holding ``_pos``
        self._offset = 0  # ``_pos`` within it

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        self._index, self._offset = 0, self._pos
        while self._index < len(self._pieces) and self._offset >= len(self._pieces[self._index]):
            self._offset -= len(self._pieces[self._index])
            self._index += 1
        return self._pos

    def read(self, size: int = -1) -> memoryview:
        """Up to ``size`` bytes (all that is left of the current piece when ``size`` < 0) from the
        position, as a view; empty at the end."""
        while self._index < len(self._pieces) and self._offset == len(self._pieces[self._index]):
            self._index, self._offset = self._index + 1, 0
        if self._index == len(self._pieces):
            return memoryview(b"")
        piece = self._pieces[self._index]
        end = len(piece) if size < 0 else min(len(piece), self._offset + size)
        view = piece[self._offset : end]
        self._offset = end
        self._pos += len(view)
        return view

    def close(self) -> None:
        """Nothing to release: the pieces are the request's, freed with the part."""


def crc32(pieces: list[Piece]) -> str:
    """The CRC32 of the pieces, as S3's ``x-amz-checksum-crc32`` header holds it (base64, big-endian).

    Given with the part, botocore sends it as it is instead of reading the part to compute it (in
    1 MiB copies); the store checks the part against it. ``zlib.crc32`` reads each piece where it is
    and lets other threads run meanwhile."""
    value = 0
    for piece in pieces:
        value = zlib.crc32(piece, value)
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


class S3UploadSink:
    held = False  # its bytes go to the bucket as they come
    held_bytes: bytes | None = None

    def __init__(self, storage: S3Storage) -> None:
        self.job_id: str | None = new_job_id()
        self.key = upload_key(self.job_id)
        self._storage = storage
        self._bucket = storage.bucket
        self._object = storage.bucket.object_key(self.key)
        self._pieces: list[Piece] = []
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[asyncio.Task[dict[str, Any]]] = []
        self._stored = False  # the object is complete (PUT or CompleteMultipartUpload done)
        self._aborted = False

    async def write(self, data: Buffers, *, final: bool = False, digest: Digest | None = None) -> None:
        if self._aborted or self._stored:
            raise RuntimeError("write to an upload that has ended")
        if digest is not None:  # in a thread: the bytes are only buffered here, not written
            await to_thread.run_sync(_update, digest, data)
        part_size = self._storage.part_size
        for piece in pieces_of(data):
            while len(piece):
                # A part is exactly part_size bytes: the piece that crosses the line is cut (two
                # views of it, no copy), so an upload holds no more than whole parts.
                take = min(len(piece), part_size - self._buffered)
                if take == len(piece):
                    self._pieces.append(piece)
                    piece = b""
                else:
                    view = memoryview(piece).cast("B")
                    self._pieces.append(view[:take])
                    piece = view[take:]
                self._buffered += take
                if self._buffered >= part_size:
                    await self._send_part()
        if final:
            await self._complete()

    async def _send_part(self, *, last: bool = False) -> None:
        """Send the part gathered so far at once; then, unless it is the ``last``, wait while
        ``parts_in_flight`` are in flight (no byte is taken meanwhile: the parts in flight are
        all the upload holds). A failed part ends the upload here."""
        pieces, self._pieces, self._buffered = self._pieces, [], 0
        if self._upload_id is None:
            created = await to_thread.run_sync(
                partial(
                    self._bucket.call,
                    "create_multipart_upload",
                    Key=self._object,
                    ContentType="application/octet-stream",
                    # Each part carries its CRC32 and the store checks it (as boto3's transfer
                    # manager does); declaring it here spares the store a full-object pass at the end.
                    ChecksumAlgorithm="CRC32",
                )
            )
            self._upload_id = str(created["UploadId"])
        self._raise_failed()
        number = len(self._parts) + 1
        self._parts.append(asyncio.ensure_future(to_thread.run_sync(self._upload_part, number, pieces)))
        while not last:
            pending = [task for task in self._parts if not task.done()]
            if len(pending) < self._storage.parts_in_flight:
                break
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        self._raise_failed()

    def _raise_failed(self) -> None:
        for task in self._parts:
            if task.done():
                task.result()  # a failed part ends the upload now

    def _upload_part(self, number: int, pieces: list[Piece]) -> dict[str, Any]:
        body = PartBody(pieces)  # read where they are: no joined copy of the part
        try:
            sent = self._bucket.call(
                "upload_part",
                Key=self._object,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
                ChecksumCRC32=crc32(pieces),
            )
        except FileNotFoundError:  # NoSuchUpload: aborted behind our back (a sweeper, an operator)
            raise StorageUnavailable(f"{self._bucket.describe()}: the multipart upload was aborted") from None
        part: dict[str, Any] = {"PartNumber": number, "ETag": sent["ETag"]}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256"):
            if sent.get(name):
                part[name] = sent[name]
        return part

    async def _complete(self) -> None:
        if self._stored:
            return
        if self._upload_id is None:
            pieces, self._pieces, self._buffered = self._pieces, [], 0
            await to_thread.run_sync(self._put, pieces)
        else:
            if self._pieces:
                await self._send_part(last=True)  # it may be smaller than the others
            parts = await asyncio.gather(*self._parts)
            await to_thread.run_sync(
                partial(
                    self._bucket.call,
                    "complete_multipart_upload",
                    Key=self._object,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": list(parts)},
                )
            )
        self._stored = True

    def _put(self, pieces: list[Piece]) -> None:
        body = b"".join(pieces)
        pieces.clear()
        self._bucket.call("put_object", Key=self._object, Body=body, ContentType="application/octet-stream")

    async def commit(self, key: str, *, sync_dir: bool = True) -> None:
        """Store the object completely (``key`` must be this upload's, :attr:`key`); on failure,
        leave nothing behind and raise."""
        if key != self.key:
            raise ValueError(f"an object cannot be renamed: this upload is {self.key}, not {key}")
        try:
            await self._complete()
        except BaseException:
            await asyncio.shield(self.abort())
            raise

    def placer(self, key: str) -> Callable[[], None] | None:
        """None: :meth:`commit` must run before the row is inserted (nothing to move in place)."""
        return None

    async def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        self._pieces, self._buffered = [], 0
        if self._parts:  # a part's thread cannot be stopped: let it end (its timeouts bound it)
            await asyncio.gather(*self._parts, return_exceptions=True)
        await to_thread.run_sync(self._discard)

    def _discard(self) -> None:
        """Abort the multipart upload, or delete the object completed for a row that never came.
        A failure is logged: the sweeper aborts stale multipart uploads and removes orphans."""
        try:
            if self._stored:
                self._bucket.call("delete_object", Key=self._object)
            elif self._upload_id is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._bucket.call("abort_multipart_upload", Key=self._object, UploadId=self._upload_id)
        except Exception as exc:
            log.warning("could not clean up the upload %s (the sweeper will): %s", self.key, exc)


def _update(digest: Digest, data: Buffers) -> None:
    for piece in pieces_of(data):
        digest.update(piece)
