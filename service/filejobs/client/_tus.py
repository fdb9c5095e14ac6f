"""Resumable uploads (tus 1.0.0 at ``/v1/uploads``), the pure half shared by both clients.

A resumable submit creates an upload (``POST``, its metadata naming the file, processor, params
and the Idempotency-Key), then sends the file in chunks of ``chunk_size`` (``PATCH`` at the
server's offset). After a failed chunk (a dropped connection, a server restart) it asks the server
for its offset (``HEAD``) and goes on from there, so at most one chunk is sent again. The ``PATCH``
storing the last byte answers with ``Filejobs-Job``: the job. Given the URL of an upload begun
before (the CLI keeps it in its ledger), a submit resumes that upload instead of starting over.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, TypeVar

import httpx

from filejobs.client._common import Call, check
from filejobs.client._upload import Upload
from filejobs.client.errors import ProblemError, UnexpectedResponse

UPLOADS = "/v1/uploads"
T = TypeVar("T")
VERSION = "1.0.0"
MiB = 1024 * 1024
#: ``resumable="auto"`` uses tus for files at least this big.
DEFAULT_THRESHOLD = 64 * MiB
#: Bytes per PATCH. Each PATCH ends with a disk flush and a round trip (16 MiB chunks ran at about
#: 0.7x a plain upload's MB/s in the benchmark, 64 MiB at 0.95-1.2x); a dropped connection costs
#: little more than what was in flight, as the server keeps what a broken PATCH delivered.
DEFAULT_CHUNK = 64 * MiB
#: Pieces a chunk is read and sent in.
READ_SIZE = MiB
#: Answers to a PATCH after which the offset is asked for and the upload goes on.
RESUMABLE_STATUSES = frozenset({408, 409, 423, 429, 460, 500, 502, 503, 504, 507})

GONE = "the upload was removed from the server (terminated or expired); submit the file again"

Resumable = Literal["auto", "always", "never"]
UploadUrlCallback = Callable[[str], None]


def sent_once(body: T) -> Callable[[int], T]:
    """A body factory for a request that is not retried as it is (a PATCH resumes from HEAD)."""
    return lambda _retry: body


def wanted(mode: Resumable, upload: Upload, threshold: int) -> bool:
    """Whether this upload goes through tus: a file of known size that can be read again."""
    if mode not in ("auto", "always", "never"):
        raise ValueError("resumable must be 'auto', 'always' or 'never'")
    if mode == "never" or upload.size is None or not upload.rewindable or upload.size == 0:
        return False
    return mode == "always" or upload.size >= threshold


def _encode(value: str) -> str:
    return base64.b64encode(value.encode()).decode("ascii")


def metadata(upload: Upload, processor: str | None, params: dict[str, Any] | None) -> str:
    values = {"filename": upload.filename, "idempotency-key": upload.key}
    if processor is not None:
        values["processor"] = processor
    if params is not None:
        values["params"] = json.dumps(params, ensure_ascii=False, allow_nan=False)
    if (upload.fields or {}).get("reuse") == "false":
        values["reuse"] = "false"
    if callback_url := (upload.fields or {}).get("callback_url"):
        values["callback_url"] = callback_url
    return ",".join(f"{key} {_encode(value)}" for key, value in values.items())


def create_call(upload: Upload, processor: str | None, params: dict[str, Any] | None) -> Call:
    """A new upload. Safe to repeat: a second upload of the same file makes no second job (the
    Idempotency-Key in its metadata), and an abandoned one expires."""
    headers = {
        "Tus-Resumable": VERSION,
        "Upload-Length": str(upload.size),
        "Upload-Metadata": metadata(upload, processor, params),
    }
    return Call("POST", UPLOADS, headers=headers)


def head_call(url: str) -> Call:
    return Call("HEAD", url, headers={"Tus-Resumable": VERSION})


def patch_call(url: str, offset: int, size: int) -> Call:
    headers = {
        "Tus-Resumable": VERSION,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Content-Length": str(size),
    }
    return Call("PATCH", url, headers=headers, safe=False)


@dataclass
class Progress:
    """Where an upload stands: its URL, the server's offset, and its job once there is one."""

    url: str
    offset: int
    job_id: str | None = None


def _job_id(response: httpx.Response) -> str | None:
    value = response.headers.get("Filejobs-Job")
    return value.rsplit("/", 1)[-1] if value else None


def _offset(response: httpx.Response) -> int:
    value = response.headers.get("Upload-Offset", "")
    if not value.isdigit():
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url} answered without Upload-Offset",
            status=response.status_code,
        )
    return int(value)


def parse_created(response: httpx.Response) -> Progress:
    check(response)
    location = response.headers.get("Location")
    if response.status_code != 201 or not location:
        raise UnexpectedResponse(
            f"creating an upload answered {response.status_code} without Location",
            status=response.status_code,
        )
    return Progress(location, _offset(response), _job_id(response))


def parse_progress(url: str, response: httpx.Response) -> Progress:
    """The state a HEAD or a PATCH answered (raises its problem for an error status)."""
    check(response)
    return Progress(url, _offset(response), _job_id(response))


def is_gone(exc: ProblemError) -> bool:
    """The upload is no more (terminated, expired, removed): start a new one."""
    return exc.status in (404, 410)


def resumable_problem(exc: ProblemError) -> bool:
    return exc.status in RESUMABLE_STATUSES


def chunk_size_at(upload: Upload, offset: int, chunk_size: int) -> int:
    assert upload.size is not None
    return max(0, min(chunk_size, upload.size - offset))


def read_chunk(
    upload: Upload, source: BinaryIO, offset: int, size: int, on_progress: Callable[[int], None] | None
) -> Iterator[bytes]:
    """The bytes ``[offset, offset + size)`` of the file, read as they are sent."""
    source.seek(upload.start + offset)
    sent = 0
    while sent < size:
        piece = source.read(min(READ_SIZE, size - sent))
        if not piece:
            raise OSError("the file got shorter while uploading; submit it again")
        sent += len(piece)
        yield piece
        if on_progress is not None:
            on_progress(offset + sent)
