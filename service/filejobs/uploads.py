"""Streaming multipart upload: parse the request body as it arrives, write the file as it parses.

Nothing is spooled and the file is never held in memory: python-multipart's callback parser feeds
file bytes into a buffer that is hashed and written (both in one worker thread call, the sink's
``write(..., digest=)``, while the next buffer fills) whenever it reaches :data:`WRITE_CHUNK`.
Limits are checked before the first byte (``Content-Length``) and on every chunk. On any failure
the temp file is removed.

A timer (:class:`_Watch`, every :data:`TICK` seconds, not per chunk) hands whatever is buffered to
the writer, so a slow or stalled upload holds no more than what arrived in the last tick; it ends
an upload whose body sent nothing for ``idle_timeout`` seconds (408), and one still receiving when
the server's shutdown cutoff comes (503, see :mod:`filejobs.shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from filejobs.errors import (
    BadRequest,
    InsufficientStorage,
    MalformedMultipart,
    PayloadTooLarge,
    Problem,
    RequestTimeout,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from filejobs.filenames import display_name, parse_content_disposition
from filejobs.multipart_whole import split_whole
from filejobs.shutdown import RETRY_AFTER, Shutdown
from filejobs.sniff import SNIFF_BYTES, sniff, sniff_is_cheap
from filejobs.storage import Buffers, Digest, StorageUnavailable, UploadSink

log = logging.getLogger(__name__)

WRITE_CHUNK = 1024 * 1024
#: Seconds between two looks of the watch timer (at most a quarter of the idle timeout).
TICK = 0.25
#: The idle timeout when the caller gives none (the setting's default).
IDLE_TIMEOUT = 60.0
#: Chunks queued for the writer while the next one fills: the socket keeps being read during a write.
WRITES_IN_FLIGHT = 3
#: Chunks smaller than this are hashed on the event loop (about 2 µs per KiB).
HASH_INLINE = 64 * 1024
FILE_FIELD = "file"
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 8 * 1024
#: Room for the boundaries and part headers on top of the file and the form fields.
ENVELOPE_BYTES = 64 * 1024
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
#: The form field naming the file's SHA-256: alone (no file part) it is an upload by hash.
BY_HASH_FIELD = "file_sha256"


@dataclass
class Limits:
    max_file_bytes: int
    max_fields: int
    max_field_bytes: int

    @property
    def max_body_bytes(self) -> int:
        return self.max_file_bytes + self.max_fields * self.max_field_bytes + ENVELOPE_BYTES


@dataclass
class ReceivedFile:
    """An upload written to a temp file, not yet committed: call ``sink.commit`` or ``sink.abort``."""

    sink: UploadSink
    name: str
    size: int
    sha256: str
    content_type: str
    declared_content_type: str | None
    fields: dict[str, str] = field(default_factory=dict)
    #: False for an upload by hash (a ``file_sha256`` field and no file part): no byte was stored,
    #: ``size`` and ``sha256`` are what the client said, ``content_type`` is unknown ("").
    stored: bool = True
    #: What ``check_fields`` returned for exactly these ``fields`` (all of them came before the
    #: file and none after it), or None: the caller need not check them a second time.
    checked: object = None


FieldCheck = Callable[[dict[str, str]], object]

NOT_A_FILE = (
    f"The {FILE_FIELD!r} field holds text, not a file: its part has no filename. Send the file "
    f"itself (with curl: -F {FILE_FIELD}=@path, with the '@')."
)


def unknown_fields(names: Collection[str], known: Collection[str]) -> Unprocessable:
    """The 422 for form fields the service does not take."""
    others = ", ".join(repr(name) for name in sorted(known))
    return Unprocessable(
        f"Unknown form field(s): {', '.join(sorted(names))}. Send the file in the {FILE_FIELD!r} field "
        f"(with curl: -F {FILE_FIELD}=@path); the other fields are {others}."
    )


#: Longer Content-Type headers are refused unparsed (real ones are well under 200 characters).
MAX_CONTENT_TYPE = 1024
#: RFC 2046 §5.1.1: 1-70 of these characters, the last not a space.
BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; 415 or 400 otherwise."""
    if not content_type:
        raise UnsupportedMediaType("Send the file as multipart/form-data with a 'file' field.")
    if len(content_type) > MAX_CONTENT_TYPE:  # parsing megabytes of options would stall the loop
        raise MalformedMultipart(
            f"The Content-Type header is over {MAX_CONTENT_TYPE} characters: no valid boundary."
        )
    media, options = parse_options_header(content_type)
    if media != b"multipart/form-data":
        raise UnsupportedMediaType(
            f"Expected multipart/form-data, got {media.decode('latin-1')!r}; send the file in a 'file' field."
        )
    boundary = options.get(b"boundary")
    if not boundary or not BOUNDARY.fullmatch(boundary):
        raise MalformedMultipart("The multipart/form-data content type has no valid boundary.")
    return boundary


def declared_length(value: str | None, limits: Limits) -> int | None:
    """The Content-Length, checked against the limit before a byte is read."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):  # "²".isdigit() is True; int() refuses it
        raise BadRequest("Content-Length must be a non-negative integer.")
    length = int(value)
    if length > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"The request body is {length} bytes; files may be at most {limits.max_file_bytes} bytes.",
            max_file_bytes=limits.max_file_bytes,
        )
    return length


class _Receiver:
    """The parser's callbacks and the state they build. Exceptions raised here abort the parse."""

    def __init__(
        self, sink: UploadSink, limits: Limits, check_fields: FieldCheck, field_names: Collection[str]
    ) -> None:
        self.sink = sink
        self.limits = limits
        self.check_fields = check_fields
        self.field_names = field_names
        self.fields: dict[str, str] = {}
        #: How many fields ``check_fields`` saw (when the file part began) and what it returned.
        self.checked: tuple[int, object] | None = None
        #: Body bytes received so far.
        self.received = 0
        #: True while :meth:`flush` waits for the writer to take a chunk (a slow disk, not an idle client).
        self.writing = False
        self.parts = 0
        self.ended = False
        self.file_seen = False
        self.file_name: str | None = None
        self.file_declared_type: str | None = None
        self.size = 0
        self.sample = bytearray()
        self.sha256 = hashlib.sha256()
        self._pieces: list[memoryview] = []
        self._buffered = 0
        self._chunks: asyncio.Queue[tuple[list[memoryview], int] | None] = asyncio.Queue(
            maxsize=WRITES_IN_FLIGHT
        )
        self._writer: asyncio.Task[None] | None = None
        self._in_file = False
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.limits.max_fields + 1:
            raise PayloadTooLarge(
                f"Too many form parts: at most {self.limits.max_fields} fields and one file are accepted."
            )
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self.header(self._header_name, self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def header(self, name: bytes | bytearray, value: bytes | bytearray) -> None:
        text = value.decode("utf-8", errors="replace")
        self._headers[name.decode("latin-1").strip().lower()] = text.strip()

    def take_whole(self, body: bytes, boundary: bytes) -> bool:
        """Parse ``body``, the whole request body, without python-multipart when it is plainly
        framed (:func:`filejobs.multipart_whole.split_whole`): the same callbacks, in the same
        order, with the same values as python-multipart would make. False (nothing done) when it
        is not: the caller hands it to python-multipart."""
        parts = split_whole(body, boundary, MAX_PART_HEADERS, MAX_PART_HEADER_BYTES)
        if parts is None:
            return False
        for headers, start, end in parts:
            self.on_part_begin()
            for name, value in headers:
                self.header(name, value)
            self.on_headers_finished()
            if end > start:
                self.on_part_data(body, start, end)
            self.on_part_end()
        self.on_end()
        return True

    def on_headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition")
        if not disposition:
            raise MalformedMultipart("A form part has no Content-Disposition header.")
        name, filename = parse_content_disposition(disposition)
        if not name:
            raise MalformedMultipart("A form part's Content-Disposition has no name.")
        if name == FILE_FIELD:
            if filename is None:  # curl -F file=photo.jpg (no '@'): the name is sent as text
                raise Unprocessable(NOT_A_FILE)
            if self.file_seen:
                raise Unprocessable("Send exactly one file per job: the 'file' field appeared twice.")
            self.file_seen = True
            self._in_file = True
            self.file_name = display_name(filename)
            self.file_declared_type = self._headers.get("content-type") or None
            if self.fields:  # fail fast, before the file streams in
                self.checked = (len(self.fields), self.check_fields(dict(self.fields)))
            return
        if filename is not None and name not in self.field_names:  # -F upload=@path
            raise unknown_fields([name], self.field_names)
        if name in self.fields:
            raise Unprocessable(f"The form field {name!r} appeared twice.")
        self._field_name = name
        self._field_value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            size = end - start
            self.size += size
            if self.size > self.limits.max_file_bytes:
                raise PayloadTooLarge(
                    f"The file is larger than the limit of {self.limits.max_file_bytes} bytes.",
                    max_file_bytes=self.limits.max_file_bytes,
                )
            piece = memoryview(data)[start:end]  # no copy until the chunk is joined
            if len(self.sample) < SNIFF_BYTES:
                self.sample += piece[: SNIFF_BYTES - len(self.sample)]
            self._pieces.append(piece)
            self._buffered += size
            return
        self._field_value += data[start:end]
        if len(self._field_value) > self.limits.max_field_bytes:
            raise PayloadTooLarge(
                f"The form field {self._field_name!r} is larger than {self.limits.max_field_bytes} bytes."
            )

    def on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            return
        if self._field_name is not None:
            try:
                self.fields[self._field_name] = self._field_value.decode("utf-8")
            except UnicodeDecodeError:
                if self._field_name not in self.field_names:  # a file, most likely
                    raise unknown_fields([self._field_name], self.field_names) from None
                raise Unprocessable(f"The form field {self._field_name!r} is not UTF-8 text.") from None
            self._field_name = None

    def on_end(self) -> None:
        self.ended = True

    def _hash(self, pieces: list[memoryview]) -> None:
        for piece in pieces:
            self.sha256.update(piece)

    async def _write_chunks(self) -> None:
        """The writer: hashes and writes each chunk in order (one thread call for both)."""
        while (item := await self._chunks.get()) is not None:
            await self._write_chunk(*item)
            item = None  # hold no chunk while the next one is awaited (a stalled upload's memory)

    async def _write_chunk(self, pieces: list[memoryview], size: int, *, final: bool = False) -> None:
        if size < HASH_INLINE:  # hashing a small chunk costs less than a thread hop
            self._hash(pieces)
            await self.sink.write(pieces, final=final)
        else:  # hashed in the sink's writing thread: one hop, and the event loop only receives
            await self.sink.write(pieces, final=final, digest=self.sha256)

    async def _put(self, item: tuple[list[memoryview], int] | None) -> None:
        """Hand ``item`` to the writer, waiting while it is :data:`WRITES_IN_FLIGHT` chunks behind;
        re-raise the writer's error (a full disk) instead of waiting on a writer that stopped."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_chunks())
        put = asyncio.ensure_future(self._chunks.put(item))
        try:
            done, _ = await asyncio.wait({put, self._writer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (the watch ended the upload): leave no put behind
            put.cancel()
            raise
        if put not in done:
            put.cancel()
            self._writer.result()

    async def flush(self, *, final: bool = False) -> None:
        """Pass the buffer to the writer once it holds :data:`WRITE_CHUNK` bytes (or at the end);
        at the end, wait until everything is written."""
        if self._writer is not None and self._writer.done():
            self._writer.result()
        if self._pieces and (final or self._buffered >= WRITE_CHUNK):
            # The pieces go to the writer as they are (views of the request's body chunks): the
            # writer thread writes them one after the other, no joining copy on the event loop.
            pieces, size = self._pieces, self._buffered
            self._pieces, self._buffered = [], 0
            if final and self._writer is None:  # a small file, whole in one chunk: one thread call
                await self._write_chunk(pieces, size, final=True)  # writes, fsyncs and closes it
                return
            self.writing = True
            try:
                await self._put((pieces, size))
            finally:
                self.writing = False
        if final and self._writer is not None:
            await self._put(None)
            writer, self._writer = self._writer, None
            await writer

    def hand_over(self) -> None:
        """Give the writer what is buffered now (the watch timer, on the event loop): a slow or
        stalled upload holds at most what arrived since the last tick. Not while :meth:`flush`
        waits to hand over a chunk: nothing is buffered then, and chunks keep their order."""
        if not self._pieces or self.writing:
            return
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_chunks())
        elif self._writer.done():
            return  # its error surfaces at the next flush
        with contextlib.suppress(asyncio.QueueFull):  # the writer is behind: the next tick
            self._chunks.put_nowait((self._pieces, self._buffered))
            self._pieces, self._buffered = [], 0

    async def cancel_pending(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, StorageUnavailable):
                await self._writer  # its error (if any) was raised already
            self._writer = None


class _Watch:
    """One upload's timer, every :data:`TICK` s while its body streams (nothing per chunk): hands
    the buffer to the writer, and ends the upload (cancels its task) once its body sent nothing
    for ``idle_timeout`` s, or at the shutdown's cutoff for uploads. One timer handle per upload
    (cheaper than an ``asyncio.timeout`` moved forward besides it: small uploads pay for it)."""

    def __init__(self, receiver: _Receiver, idle_timeout: float, shutdown: Shutdown | None) -> None:
        self.receiver = receiver
        self.idle_timeout = idle_timeout
        self.shutdown = shutdown
        self.interval = min(TICK, idle_timeout / 4)
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.seen = 0
        self.idle_until = 0.0
        #: Why this watch cancelled the upload: "idle" or "shutdown".
        self.ended: str | None = None
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.idle_until = self.loop.time() + self.idle_timeout
        self.handle = self.loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _tick(self) -> None:
        receiver = self.receiver
        now = self.loop.time()
        if receiver.received != self.seen or receiver.writing:  # the client (or our disk) is busy
            self.seen = receiver.received
            self.idle_until = now + self.idle_timeout
        receiver.hand_over()
        cutoff = self.shutdown.upload_deadline if self.shutdown is not None else None
        if cutoff is not None and now >= cutoff:
            self.ended = "shutdown"
        elif now >= self.idle_until:
            self.ended = "idle"
        if self.ended is not None and self.task is not None:
            self.handle = None
            self.task.cancel()
            return
        self.handle = self.loop.call_later(self.interval, self._tick)

    def problem(self) -> Problem | None:
        """The answer for an upload this watch ended (logged; the task's cancellation is taken
        back), or None when the cancellation came from elsewhere."""
        if self.ended is None or self.task is None:
            return None
        self.task.uncancel()
        received = self.receiver.received
        if self.ended == "shutdown":
            log.warning("upload ended by the shutdown after %d body bytes: answered 503", received)
            return ServiceUnavailable(
                "The server is shutting down; send the upload again.",
                headers={"Retry-After": RETRY_AFTER, "Connection": "close"},
            )
        log.info(
            "upload ended: its body sent nothing for %g s after %d bytes (408)", self.idle_timeout, received
        )
        return RequestTimeout(
            f"The upload's body sent nothing for {self.idle_timeout:g} seconds; send it again.",
            headers={"Connection": "close"},
        )


async def receive_upload(
    *,
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    open_sink: Callable[[], UploadSink],
    limits: Limits,
    check_fields: FieldCheck,
    field_names: Collection[str],
    idle_timeout: float = IDLE_TIMEOUT,
    shutdown: Shutdown | None = None,
) -> ReceivedFile:
    """Stream a multipart body into a new temp file. Raises a :class:`~filejobs.errors.Problem`.

    ``field_names`` are the form fields taken besides the file (an unknown one holding a file or
    binary data gets a 422 at once; unknown text fields are left to ``check_fields``).
    ``check_fields`` sees the non-file fields when the file part starts (if any came first), so a
    bad processor name is refused before gigabytes stream in; the caller checks them again at the end.
    A body that sends nothing for ``idle_timeout`` s gets 408; one still arriving at the cutoff of a
    ``shutdown``, 503.
    """
    boundary = multipart_boundary(headers.get("content-type"))
    length = declared_length(headers.get("content-length"), limits)
    sink = open_sink()
    receiver = _Receiver(sink, limits, check_fields, field_names)
    parser: MultipartParser | None = None
    watch = _Watch(receiver, idle_timeout, shutdown)
    try:
        watch.start()
        try:
            async for chunk in body:
                if chunk:
                    receiver.received += len(chunk)
                    if receiver.received > limits.max_body_bytes:  # e.g. an endless epilogue
                        raise PayloadTooLarge(
                            f"The request body is larger than {limits.max_body_bytes} bytes.",
                            max_file_bytes=limits.max_file_bytes,
                        )
                    if receiver.ended:  # python-multipart ignores what follows the closing delimiter
                        continue
                    if parser is None:
                        # The whole body in its first chunk (a small upload): parsed in a few finds.
                        if length == len(chunk) and receiver.take_whole(chunk, boundary):
                            await receiver.flush()
                            continue
                        parser = MultipartParser(
                            boundary,
                            receiver.callbacks(),  # type: ignore[arg-type]
                            max_header_count=MAX_PART_HEADERS,
                            max_header_size=MAX_PART_HEADER_BYTES,
                        )
                    parser.write(chunk)
                    await receiver.flush()
        finally:
            watch.stop()
        if not receiver.ended:
            raise MalformedMultipart("The multipart body ended before its closing boundary.")
        if not receiver.file_seen and BY_HASH_FIELD in receiver.fields:
            await _abort(receiver, sink)
            return _by_hash(sink, receiver.fields)
        if not receiver.file_seen:
            raise Unprocessable("The form has no 'file' field.")
        if receiver.size == 0:
            raise Unprocessable("The uploaded file is empty.")
        await receiver.flush(final=True)
    except MultipartParseError as exc:
        await _abort(receiver, sink)
        raise MalformedMultipart(f"The multipart body is malformed: {_parse_reason(exc)}") from None
    except asyncio.CancelledError:
        await _abort(receiver, sink)
        ended = watch.problem()
        if ended is None:
            raise  # not ours: uvicorn's, at the end of a shutdown
        raise ended from None
    except OSError as exc:
        await _abort(receiver, sink)
        if exc.errno in DISK_FULL:
            raise InsufficientStorage("The server has no room for this file right now.") from None
        raise
    except StorageUnavailable as exc:
        await _abort(receiver, sink)
        raise storage_unavailable(exc) from None
    except BaseException:
        await _abort(receiver, sink)
        raise
    checked = receiver.checked
    return ReceivedFile(
        sink=sink,
        name=receiver.file_name or "upload",
        size=receiver.size,
        sha256=receiver.sha256.hexdigest(),
        content_type=await _sniff(bytes(receiver.sample)),
        declared_content_type=receiver.file_declared_type,
        fields=receiver.fields,
        # A field cannot appear twice, so the same count is the same fields.
        checked=checked[1] if checked is not None and checked[0] == len(receiver.fields) else None,
    )


class NothingStored:
    """The sink of an upload by hash that came without a multipart body (``POST /v1/jobs/by-hash``):
    no byte arrives, so there is nothing to write, commit or abort."""

    job_id: str | None = None
    held = False  # no bytes in memory
    held_bytes: bytes | None = None

    async def write(self, data: Buffers, *, final: bool = False, digest: Digest | None = None) -> None:
        raise RuntimeError("an upload by hash has no bytes to write")

    async def commit(self, key: str, *, sync_dir: bool = True) -> None:
        raise RuntimeError("an upload by hash has no bytes to commit")

    def placer(self, key: str) -> Callable[[], None] | None:
        return None

    async def abort(self) -> None:
        return None


def by_hash_file(fields: dict[str, str]) -> ReceivedFile:
    """An upload by hash from its fields alone (``file_sha256`` and, optionally, ``file_name``,
    ``file_size``, ``processor``, ``params``, ``reuse``, ``callback_url``), as the multipart
    receiver makes one from a form without a file part."""
    return _by_hash(NothingStored(), fields)


def _by_hash(sink: UploadSink, fields: dict[str, str]) -> ReceivedFile:
    """An upload by hash: the content named by ``file_sha256`` (checked by the intake)."""
    size_text = fields.get("file_size", "")
    if size_text and not (size_text.isascii() and size_text.isdigit()):
        raise Unprocessable("'file_size' must be a whole number of bytes.")
    return ReceivedFile(
        sink=sink,
        name=display_name(fields.get("file_name") or "upload"),
        size=int(size_text) if size_text else -1,
        sha256=fields[BY_HASH_FIELD],
        content_type="",
        declared_content_type=None,
        fields=fields,
        stored=False,
    )


async def _sniff(sample: bytes) -> str:
    """The content type; in a thread only when the sample needs charset detection (CPU-heavy)."""
    if sniff_is_cheap(sample):
        return sniff(sample)
    return await asyncio.to_thread(sniff, sample)


def _parse_reason(exc: MultipartParseError) -> str:
    # python-multipart's messages name offsets and states, never paths; keep the first line only.
    return str(exc).splitlines()[0][:200] if str(exc) else "unexpected bytes"


async def _abort(receiver: _Receiver, sink: UploadSink) -> None:
    await receiver.cancel_pending()
    await asyncio.shield(sink.abort())


def storage_unavailable(exc: StorageUnavailable) -> ServiceUnavailable:
    """The 503 for an upload the storage backend (a bucket) could not take; logged with its cause."""
    log.warning("upload refused, storage unavailable: %s", exc)
    return ServiceUnavailable(
        "The file storage is unavailable right now; nothing was kept. Send the upload again shortly.",
        headers={"Retry-After": RETRY_AFTER},
    )


async def commit_or_abort(sink: UploadSink, key: str, *, sync_dir: bool = True) -> None:
    """Commit the temp file under ``key``; on failure remove it and answer 507 for a full disk,
    503 for a storage backend that cannot be reached."""
    try:
        await sink.commit(key, sync_dir=sync_dir)
    except StorageUnavailable as exc:
        await asyncio.shield(sink.abort())
        raise storage_unavailable(exc) from None
    except OSError as exc:
        await asyncio.shield(sink.abort())
        if exc.errno in DISK_FULL:
            raise InsufficientStorage("The server has no room for this file right now.") from None
        raise
