"""Where resumable uploads live while they arrive: the interface the protocol code uses.

:class:`filejobs.tus.local.LocalUploadStore` is the implementation (a directory per upload under the
data directory). An upload belongs to one owner (an API key's scope): a store looks an upload up by
owner and id together, so another key's upload is simply not found. Every method does file (or network)
I/O: call them in a worker thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from filejobs.errors import TooManyRequests
from filejobs.storage import UploadSink


def new_upload_id() -> str:
    """An upload's id: 32 random hex digits (unguessable, and safe in a path)."""
    return uuid.uuid4().hex


@dataclass
class UploadInfo:
    """An upload's state record. ``offset`` counts only bytes that are durable (fsynced, or in the bucket)."""

    id: str
    owner: str
    length: int | None  # None: deferred (creation-defer-length)
    offset: int
    metadata: dict[str, str]
    created_at: float  # Unix time
    expires_at: float
    #: The id of the job this upload becomes, fixed before the job is made (exactly one job).
    job_id: str | None = None
    #: The job's row exists: the upload is finished and only its record (naming the job) is kept.
    done: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length


@dataclass(frozen=True)
class Usage:
    """What one owner's incomplete uploads hold."""

    uploads: int
    bytes: int


class OpenUpload(Protocol):
    """An upload locked for this request (one request at a time writes or completes an upload)."""

    info: UploadInfo

    def write(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Append at the end of what was written (not yet durable)."""

    def commit(self, offset: int) -> None:
        """Make the bytes up to ``offset`` durable, then record ``offset`` (and the rest of ``info``)."""

    def discard(self) -> None:
        """Drop whatever was written since the last :meth:`commit`."""

    def save(self) -> None:
        """Record ``info`` durably (its offset must not pass what is on disk)."""

    def seal(self) -> None:
        """All bytes are in: put them together (S3: complete the multipart upload; local: nothing).
        Raises :class:`~filejobs.errors.Gone` when they are no longer there."""

    def read(self, start: int, size: int) -> bytes:
        """Bytes of the upload (once sealed)."""

    def hash_all(self) -> str:
        """The SHA-256 of the whole (sealed) upload, read back."""

    def sink(self) -> UploadSink:
        """The sealed upload as the intake's sink: its commit stores it under the job's key."""

    def finish(self, expires_at: float) -> None:
        """The job exists: drop the bytes, keep the record (``done``) until ``expires_at``."""

    def remove(self) -> None:
        """Terminate: remove the bytes and the record."""

    def close(self) -> None:
        """Release the lock."""


class UploadStore(Protocol):
    def create(self, info: UploadInfo, *, max_uploads: int, max_bytes: int) -> None:
        """Record a new, empty upload; 429 when its owner's incomplete uploads would pass either bound."""

    def get(self, owner: str, upload_id: str) -> UploadInfo | None: ...

    def open(self, owner: str, upload_id: str, *, wait: float) -> OpenUpload | None:
        """Lock the upload (waiting up to ``wait`` s for another request's lock: 423 then); None when
        there is no such upload of ``owner``."""

    def usage(self, owner: str) -> Usage: ...

    def remove_expired(self, now: float) -> int:
        """Remove uploads (and finished records) past their expiry that no request holds; how many."""


def check_bounds(used: Usage, length: int | None, *, max_uploads: int, max_bytes: int) -> None:
    """Refuse (429) a new upload of ``length`` bytes of a key whose incomplete uploads are ``used``
    when it would have more than ``max_uploads`` of them or hold more than ``max_bytes`` (0: no bound)."""
    if used.uploads >= max_uploads:
        raise TooManyRequests(
            f"This key has {max_uploads} incomplete resumable uploads; finish or terminate "
            "some (DELETE) or wait for them to expire.",
            headers={"Retry-After": "60"},
        )
    if max_bytes and used.bytes + (length or 0) > max_bytes:
        raise TooManyRequests(
            f"This key's incomplete resumable uploads would hold more than {max_bytes} bytes; "
            "finish or terminate some first.",
            headers={"Retry-After": "60"},
        )
