"""The tus operations on ``/v1/uploads``: create, look at, append to, terminate an upload.

HTTP-free (headers are a mapping, the body an async iterator of bytes), like
:mod:`filejobs.jobs.intake`. Creation answers what ``POST /v1/jobs`` answers before a byte is
stored (processor and params 422, a declared type the processor refuses 415, 413 beyond
``MAX_UPLOAD_BYTES``, 507 short of disk, 503 queue too deep, 429 too many unfinished jobs) and
bounds each key's incomplete uploads (their number and the bytes they hold, 429). The ``PATCH``
that stores the last byte makes the job (:mod:`filejobs.tus.complete`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ParamSpec, Protocol, TypeVar

from anyio import to_thread

from filejobs import metrics
from filejobs.errors import (
    BadRequest,
    Conflict,
    Gone,
    Locked,
    NotFound,
    PayloadTooLarge,
    Problem,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from filejobs.jobs.intake import IntakeServices, Submitted
from filejobs.jobs.submit import check_callback
from filejobs.models import http_date
from filejobs.shutdown import RETRY_AFTER
from filejobs.storage import StorageUnavailable
from filejobs.tus import protocol
from filejobs.tus.complete import complete_upload
from filejobs.tus.metadata import check_metadata
from filejobs.tus.receive import Hashes, append_body
from filejobs.tus.store import OpenUpload, UploadInfo, UploadStore, new_upload_id

log = logging.getLogger(__name__)

#: Seconds a request waits for another request's hold on the same upload (then 423).
LOCK_WAIT = 10.0
#: Seconds between two tries for that hold (the wait is on the event loop: it holds no thread).
LOCK_POLL = 0.02


P = ParamSpec("P")
R = TypeVar("R")


def _storage_guarded(operation: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A bucket that cannot be reached (the S3 store) answers 503: the client tries again, and a
    ``HEAD`` then gives the offset the bucket holds."""

    @functools.wraps(operation)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(*args, **kwargs)
        except StorageUnavailable as exc:
            log.warning("resumable upload: storage unavailable: %s", exc)
            raise ServiceUnavailable(
                "The file storage is unavailable right now; resume the upload shortly (HEAD gives the "
                "offset stored).",
                headers={"Retry-After": RETRY_AFTER},
            ) from None

    return guarded


class TusServices(IntakeServices, Protocol):
    @property
    def uploads(self) -> UploadStore: ...
    @property
    def upload_hashes(self) -> Hashes: ...


@dataclass(frozen=True)
class Patched:
    """An upload after a PATCH; ``submitted`` when this PATCH completed it (its job)."""

    info: UploadInfo
    submitted: Submitted | None = None


async def _open(services: TusServices, owner: str, upload_id: str) -> OpenUpload | None:
    """Hold ``owner``'s upload for this request (None: no such upload). Another request's hold is
    waited out for up to :data:`LOCK_WAIT` s (then 423), each try a quick thread call: requests
    waiting on a busy upload cost no worker thread (a key cannot starve the pool with HEADs)."""
    deadline = asyncio.get_running_loop().time() + LOCK_WAIT
    while True:
        try:
            return await to_thread.run_sync(lambda: services.uploads.open(owner, upload_id, wait=0))
        except Locked:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(LOCK_POLL)


def upload_headers(info: UploadInfo) -> dict[str, str]:
    """Offset, expiry and (once made) the job of an upload, as a PATCH or HEAD answers them."""
    headers = {"Upload-Offset": str(info.offset)}
    if info.done and info.job_id is not None:
        headers[protocol.JOB_HEADER] = f"/v1/jobs/{info.job_id}"
    else:
        headers["Upload-Expires"] = http_date(_datetime(info.expires_at))
    return headers


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _gone_if_finished(info: UploadInfo) -> None:
    if info.done:
        raise Gone(
            "This upload is complete and became a job (Filejobs-Job); it takes no more bytes.",
            headers=upload_headers(info),
            job=f"/v1/jobs/{info.job_id}",
        )
    if info.expires_at <= time.time():
        raise Gone("This upload expired before it was complete; start a new one.")


@_storage_guarded
async def create(*, services: TusServices, owner: str, headers: Mapping[str, str]) -> UploadInfo:
    """Check the creation request and record a new, empty upload of ``owner``."""
    settings = services.settings
    length = protocol.parse_length(headers, settings.max_upload_bytes)
    if length == 0:
        raise Unprocessable("The upload is empty (Upload-Length: 0); a job needs a file with content.")
    metadata = protocol.parse_metadata(headers.get("upload-metadata"))
    check_metadata(services.registry, metadata)
    if callback_url := metadata.get("callback_url"):  # refused before a byte is sent, as in POST /v1/jobs
        await check_callback(db=services.db, settings=settings, owner=owner, url=callback_url)
    await to_thread.run_sync(services.admission.check_disk, length)
    await to_thread.run_sync(services.admission.check_new_job, owner)
    now = time.time()
    info = UploadInfo(
        id=new_upload_id(),
        owner=owner,
        length=length,
        offset=0,
        metadata=metadata,
        created_at=now,
        expires_at=now + settings.upload_expiry.total_seconds(),
    )
    await to_thread.run_sync(
        lambda: services.uploads.create(
            info, max_uploads=settings.max_resumable_uploads, max_bytes=settings.max_resumable_bytes
        )
    )
    metrics.RESUMABLE_UPLOADS.labels("created").inc()
    return info


@_storage_guarded
async def status(*, services: TusServices, owner: str, upload_id: str) -> UploadInfo:
    """The upload as a HEAD shows it: 404 for none of ``owner``'s, 410 once expired. It waits for
    a PATCH in progress on it (a connection that just broke is still storing what it received),
    so the offset it gives is the one a resume must use; a PATCH still going after
    :data:`LOCK_WAIT` s is not waited for: the offset recorded so far is answered (its bytes are
    on disk too), never 423."""
    try:
        upload = await _open(services, owner, upload_id)
    except Locked:
        found = await to_thread.run_sync(services.uploads.get, owner, upload_id)
    else:
        found = upload.info if upload is not None else None
        if upload is not None:
            await to_thread.run_sync(upload.close)
    if found is None:
        raise NotFound("No such upload (or it was terminated, or it expired and was removed).")
    info = found
    if not info.done and info.expires_at <= time.time():
        raise Gone("This upload expired before it was complete; start a new one.")
    return info


@_storage_guarded
async def append(
    *,
    services: TusServices,
    owner: str,
    upload_id: str,
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    before_complete: Callable[[], Awaitable[None]],
    creating: bool = False,
) -> Patched:
    """Append a PATCH body (or a creation-with-upload body, ``creating``) at ``Upload-Offset``; the
    PATCH that stores the last byte (or an empty one once all bytes are in, after a failed try)
    makes the job, after ``before_complete`` (the caller's checks that its key still may)."""
    media = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != protocol.CHUNK_TYPE:
        raise UnsupportedMediaType(f"A PATCH's Content-Type must be {protocol.CHUNK_TYPE}.")
    offset = 0 if creating else protocol.parse_count("Upload-Offset", headers.get("upload-offset"))
    if offset is None:
        raise BadRequest("A PATCH needs Upload-Offset.")
    checksum = protocol.parse_checksum(headers.get("upload-checksum"))
    content_length = protocol.parse_count("Content-Length", headers.get("content-length"))
    new_length = None if creating else protocol.parse_count("Upload-Length", headers.get("upload-length"))
    settings = services.settings
    upload = await _open(services, owner, upload_id)
    if upload is None:
        raise NotFound("No such upload (or it was terminated, or it expired and was removed).")
    try:
        info = upload.info
        _gone_if_finished(info)
        if offset != info.offset:
            raise Conflict(
                f"Upload-Offset is {offset} but the upload has {info.offset} bytes: resume from there "
                "(HEAD gives the offset).",
                headers={"Upload-Offset": str(info.offset)},
            )
        if new_length is not None:
            _declare_length(info, new_length, settings.max_upload_bytes)
        room = await _room(services, info)
        if content_length is not None and content_length > room:
            raise protocol_too_large(room)
        if content_length != 0:
            before = info.offset
            appended = await append_body(
                upload,
                body,
                room=room,
                checksum=checksum,
                hashes=services.upload_hashes,
                checkpoint=settings.resumable_checkpoint_bytes,
                idle_timeout=settings.upload_idle_timeout,
                shutdown=services.shutdown,
            )
            metrics.RESUMABLE_BYTES.inc(appended.offset - before)
            if appended.problem is not None:
                if isinstance(appended.problem, Problem):
                    appended.problem.headers.update(upload_headers(info))
                raise appended.problem
        elif new_length is not None:
            await to_thread.run_sync(upload.save)
        if not info.complete:
            return Patched(info)
        await before_complete()
        submitted = await complete_upload(
            services=services,
            upload=upload,
            hashes=services.upload_hashes,
            expiry=settings.upload_expiry.total_seconds(),
        )
        return Patched(upload.info, submitted)
    finally:
        await to_thread.run_sync(upload.close)


def protocol_too_large(room: int) -> Problem:
    return PayloadTooLarge(
        f"The chunk goes past the upload's end (or the size limit): {room} more bytes may be sent.",
    )


def _declare_length(info: UploadInfo, length: int, max_size: int) -> None:
    """A deferred upload's ``Upload-Length``, sent with a PATCH."""
    if info.length is not None:
        if length != info.length:
            raise BadRequest(f"The upload's length is {info.length} already; it cannot change.")
        return
    protocol.check_size(length, max_size)
    if length < info.offset:
        raise BadRequest(f"Upload-Length {length} is below the {info.offset} bytes already received.")
    if length == 0:
        raise Unprocessable("The upload is empty (Upload-Length: 0); a job needs a file with content.")
    info.length = length


async def _room(services: TusServices, info: UploadInfo) -> int:
    """Bytes this PATCH may add: up to the length, or for a deferred one up to the size limit
    and what the owner's quota for incomplete uploads leaves."""
    if info.length is not None:
        return info.length - info.offset
    room = services.settings.max_upload_bytes - info.offset
    quota = services.settings.max_resumable_bytes
    if quota:
        usage = await to_thread.run_sync(services.uploads.usage, info.owner)
        room = min(room, max(0, quota - usage.bytes))
    return room


@_storage_guarded
async def terminate(*, services: TusServices, owner: str, upload_id: str) -> None:
    """Remove the upload at once (its bytes and record); 404 when there is none of ``owner``'s."""
    upload = await _open(services, owner, upload_id)
    if upload is None:
        raise NotFound("No such upload (or it was terminated, or it expired and was removed).")
    try:
        await to_thread.run_sync(upload.remove)
    finally:
        await to_thread.run_sync(upload.close)
    metrics.RESUMABLE_UPLOADS.labels("terminated").inc()
