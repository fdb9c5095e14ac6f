"""What a submit sends: the file's source, size, name, form fields and idempotency key.

Everything here blocks (stat, hashing, reads); the async client calls it in a worker thread.
"""

from __future__ import annotations

import json
import mimetypes
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from filejobs.client._multipart import CHUNK_SIZE, Framing, frame
from filejobs.client.errors import UploadError
from filejobs.client.idempotency import file_sha256, idempotency_key, stream_sha256

FileArg = str | os.PathLike[str] | BinaryIO


@dataclass
class Upload:
    """A resolved upload. A path is opened per submit; a stream is rewound to ``start`` per try."""

    filename: str
    size: int | None
    key: str
    framing: Framing
    path: Path | None = None
    stream: BinaryIO | None = None
    start: int = 0
    #: False for a stream that cannot seek: it can be sent once, so the upload is not retried.
    rewindable: bool = True
    #: The content's SHA-256 (None: a stream that cannot seek), for an upload by hash first.
    sha256: str | None = None
    #: The form's text fields (processor, params, reuse, callback_url).
    fields: dict[str, str] | None = None

    @property
    def content_length(self) -> int | None:
        return self.framing.content_length(self.size)

    def open(self) -> BinaryIO:
        if self.stream is not None:
            return self.stream
        assert self.path is not None
        return open(self.path, "rb")

    def close(self, source: BinaryIO) -> None:
        if source is not self.stream:
            source.close()

    def rewind(self, source: BinaryIO) -> None:
        if self.rewindable:
            source.seek(self.start)


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def _stream_name(stream: BinaryIO) -> str | None:
    name = getattr(stream, "name", None)
    if isinstance(name, str) and name and not name.startswith("<"):
        return os.path.basename(name)
    return None


def form_fields(
    processor: str | None,
    params: dict[str, Any] | None,
    *,
    reuse: bool = True,
    callback_url: str | None = None,
) -> dict[str, str]:
    fields: dict[str, str] = {}
    if processor is not None:
        fields["processor"] = processor
    if params is not None:
        fields["params"] = json.dumps(params, ensure_ascii=False, allow_nan=False)
    if not reuse:
        fields["reuse"] = "false"
    if callback_url is not None:
        fields["callback_url"] = callback_url
    return fields


def prepare_upload(
    file: FileArg,
    *,
    processor: str | None,
    params: dict[str, Any] | None,
    filename: str | None,
    key: str | None,
    reuse: bool = True,
    sha256: str | None = None,
    callback_url: str | None = None,
) -> Upload:
    """Resolve ``file`` (a path, or a binary file object read from its current position).

    Hashes the content (for an upload by hash, and without ``key`` for :func:`idempotency_key`;
    a stream that cannot seek gets a random key and no hash: it can only be read once). A path's
    ``sha256`` when the caller has it already (a batch hashed the file) is not computed again.
    """
    fields = form_fields(processor, params, reuse=reuse, callback_url=callback_url)
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        size = os.stat(path).st_size
        name = filename or path.name or "upload"
        sha256 = sha256 or file_sha256(path)
        if key is None:
            key = idempotency_key(
                sha256, size, processor, params, name=name, reuse=reuse, callback_url=callback_url
            )
        return Upload(name, size, key, _framing(fields, name), path=path, sha256=sha256, fields=fields)

    name = filename or _stream_name(file) or "upload"
    if not _seekable(file):
        key = key or uuid.uuid4().hex
        return Upload(name, None, key, _framing(fields, name), stream=file, rewindable=False, fields=fields)
    start = file.tell()
    size = file.seek(0, os.SEEK_END) - start
    file.seek(start)
    digest, hashed = stream_sha256(file)
    file.seek(start)
    if key is None:
        key = idempotency_key(
            digest, hashed, processor, params, name=name, reuse=reuse, callback_url=callback_url
        )
    return Upload(
        name, size, key, _framing(fields, name), stream=file, start=start, sha256=digest, fields=fields
    )


def _framing(fields: dict[str, str], filename: str) -> Framing:
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return frame(fields, filename=filename, content_type=content_type)


class ChunkReader:
    """Reads the file in :data:`CHUNK_SIZE` pieces, exactly ``size`` bytes when the size is known,
    and raises :class:`UploadError` if the file turns out shorter or longer than announced."""

    def __init__(self, source: BinaryIO, size: int | None, chunk_size: int = CHUNK_SIZE) -> None:
        self.source = source
        self.size = size
        self.chunk_size = chunk_size
        self.sent = 0

    def read(self) -> bytes:
        """The next chunk; ``b""`` at the end."""
        if self.size is None:
            chunk = self.source.read(self.chunk_size)
        else:
            want = min(self.chunk_size, self.size - self.sent)
            chunk = self.source.read(want) if want > 0 else b""
            if not chunk and (self.sent < self.size or self.source.read(1)):
                raise UploadError(
                    f"the file changed size while uploading (expected {self.size} bytes); submit it again"
                )
        self.sent += len(chunk)
        return chunk
