"""tus 1.0.0 on the wire: the headers' names, what the server advertises, and their parsers.

Every parser raises the :class:`~filejobs.errors.Problem` the protocol prescribes (400 for a
malformed header, 412 for another protocol version, 413 beyond the size limit); nothing here touches
a file. See https://tus.io/protocols/resumable-upload (the spec) for the meaning of each header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from filejobs.errors import BadRequest, PayloadTooLarge, PreconditionFailed

VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
)
#: ``Upload-Checksum`` algorithms (tus names them as lower-case hashlib names).
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
CHUNK_TYPE = "application/offset+octet-stream"
#: The header naming the job a completed upload became (on the last PATCH and every later HEAD).
JOB_HEADER = "Filejobs-Job"
#: What a browser tus client must be able to read (CORS ``Access-Control-Expose-Headers``).
EXPOSED = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    JOB_HEADER,
)
#: The request headers a browser tus client sends (CORS ``Access-Control-Allow-Headers``).
REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Tus-Resumable",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Checksum",
    "X-HTTP-Method-Override",
)
#: Metadata values longer than this are refused (the whole header is bounded by the server's
#: request-head limit already; this keeps the record small).
MAX_METADATA_VALUE = 64 * 1024


def check_version(value: str | None) -> None:
    """412 (with ``Tus-Version``) unless the request speaks tus 1.0.0."""
    if value != VERSION:
        shown = "no Tus-Resumable header" if value is None else f"Tus-Resumable {value[:40]!r}"
        raise PreconditionFailed(
            f"This server speaks tus {VERSION} only; the request sent {shown}.",
            headers={"Tus-Version": VERSION, "Tus-Resumable": VERSION},
        )


def parse_count(name: str, value: str | None) -> int | None:
    """A non-negative decimal header (``Upload-Offset``, ``Upload-Length``), or None if absent."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise BadRequest(f"{name} must be a non-negative integer.")
    return int(value)


def parse_length(headers: Mapping[str, str], max_size: int) -> int | None:
    """The upload's length at creation: ``Upload-Length``, or None with ``Upload-Defer-Length: 1``.
    413 beyond ``max_size``; 400 for both, neither, or a malformed one."""
    length = parse_count("Upload-Length", headers.get("upload-length"))
    defer = headers.get("upload-defer-length")
    if length is not None and defer is not None:
        raise BadRequest("Send Upload-Length or Upload-Defer-Length, not both.")
    if length is None:
        if defer is None:
            raise BadRequest("Send Upload-Length (or Upload-Defer-Length: 1 when it is not known yet).")
        if defer.strip() != "1":
            raise BadRequest("Upload-Defer-Length must be 1.")
        return None
    check_size(length, max_size)
    return length


def check_size(length: int, max_size: int) -> None:
    if length > max_size:
        raise PayloadTooLarge(
            f"The upload is {length} bytes; files may be at most {max_size} bytes (Tus-Max-Size).",
            max_file_bytes=max_size,
        )


def parse_metadata(value: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a key alone: empty value).
    400 for bad base64, a value that is not UTF-8, an empty or duplicate key."""
    metadata: dict[str, str] = {}
    if value is None or not value.strip():
        return metadata
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise BadRequest(f"Upload-Metadata: {pair.strip()[:60]!r} is not 'key base64-value'.")
        key = parts[0]
        if not key.isascii() or not key.isprintable():
            raise BadRequest("Upload-Metadata keys must be printable ASCII without spaces or commas.")
        if key in metadata:
            raise BadRequest(f"Upload-Metadata holds the key {key!r} twice.")
        raw = parts[1] if len(parts) == 2 else ""
        if len(raw) > MAX_METADATA_VALUE:
            raise BadRequest(f"Upload-Metadata: the value of {key!r} is too long.")
        try:
            metadata[key] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise BadRequest(f"Upload-Metadata: the value of {key!r} is not base64 of UTF-8 text.") from None
    return metadata


@dataclass(frozen=True)
class Checksum:
    """An ``Upload-Checksum``: the algorithm's name and the digest the chunk must have."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return CHECKSUMS[self.algorithm]()


def parse_checksum(value: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; 400 for an unknown algorithm or bad base64."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise BadRequest(
            f"Upload-Checksum: unsupported algorithm {algorithm[:20]!r}; use one of "
            f"{', '.join(CHECKSUMS)} (Tus-Checksum-Algorithm).",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Upload-Checksum: the digest is not base64.") from None
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise BadRequest(
            f"Upload-Checksum: a {algorithm} digest has {CHECKSUMS[algorithm]().digest_size} bytes."
        )
    return Checksum(algorithm, digest)


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The ``Upload-Metadata`` header a HEAD echoes back."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )
