"""``GET /v1/jobs/{id}/result`` for an output stored in a bucket: streamed through the API (one
``Range`` passed on to the store), or, with ``FILEJOBS_RESULT_REDIRECT``, a ``307`` to a
short-lived presigned URL. Either way with the Content-Type and Content-Disposition the local
backend's file response has. An object gone from the bucket is a ``410`` problem.

Streamed, it answers the conditional headers as the local backend does (RFC 9110): ``If-None-Match``
matching the object's ETag (``*``, or a tag compared weakly) is a ``304`` with no body, and a
``Range`` under an ``If-Range`` that is not the object's ETag (nor its Last-Modified) is ignored:
the whole object, ``200``. Both are decided on a HEAD of the object first, made only when the
request carries one of them (outputs never change under their key, so the GET that follows reads
what the HEAD saw).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

from anyio import to_thread
from fastapi import Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.datastructures import Headers

from filejobs.errors import Gone, Problem
from filejobs.models import http_date, none_match
from filejobs.object_storage.store import READ_CHUNK, S3Storage

#: One byte range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``): passed on. Anything else is ignored
#: (a full 200 answer, as RFC 9110 allows).
SINGLE_RANGE = re.compile(r"bytes=(\d+-\d*|-\d+)")
GONE = "The job's output file is no longer stored."


def content_disposition(name: str) -> str:
    """What starlette's FileResponse sends for an attachment named ``name``."""
    quoted = quote(name)
    if quoted != name:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{name}"'


async def object_result(
    storage: S3Storage,
    key: str,
    *,
    name: str,
    content_type: str,
    headers: Headers,
    redirect: bool,
    redirect_ttl: float,
) -> Response:
    """The answer to a download of the object ``key`` given the request's ``headers``."""
    disposition = content_disposition(name)
    if redirect:
        await _head(storage, key)  # a vanished object is a 410 here
        url = storage.presigned_get(key, disposition=disposition, content_type=content_type, ttl=redirect_ttl)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    byte_range = headers.get("range", "").strip() or None
    if byte_range is not None and not SINGLE_RANGE.fullmatch(byte_range):
        byte_range = None
    if_none_match = headers.get("if-none-match")
    if_range = headers.get("if-range")
    if if_none_match is not None or (byte_range is not None and if_range is not None):
        head = await _head(storage, key)
        etag = head.get("ETag") or ""
        last_modified = _last_modified(head)
        if etag and none_match(etag, if_none_match):
            validators = {"ETag": etag} | ({"Last-Modified": last_modified} if last_modified else {})
            return Response(status_code=304, headers=validators)
        if if_range is not None and if_range.strip() not in (etag, last_modified):
            byte_range = None
    try:
        got = await to_thread.run_sync(storage.open_read, key, byte_range)
    except FileNotFoundError:
        raise Gone(GONE) from None
    except Exception as exc:
        if byte_range is not None and _unsatisfiable(exc):
            raise await _range_problem(storage, key) from None
        raise
    answer = {
        "Content-Disposition": disposition,
        "Content-Length": str(got["ContentLength"]),
        "Accept-Ranges": "bytes",
    }
    if got.get("ETag"):
        answer["ETag"] = got["ETag"]
    if last_modified := _last_modified(got):
        answer["Last-Modified"] = last_modified
    status = 200
    if got.get("ContentRange"):
        answer["Content-Range"] = got["ContentRange"]
        status = 206
    return StreamingResponse(
        _chunks(got["Body"]), status_code=status, media_type=content_type, headers=answer
    )


def _last_modified(answer: dict[str, Any]) -> str:
    """A HeadObject's or GetObject's ``LastModified`` as an HTTP date; ``""`` when it has none."""
    moment = answer.get("LastModified")
    return http_date(moment) if moment is not None else ""


async def _head(storage: S3Storage, key: str) -> dict[str, Any]:
    try:
        return await to_thread.run_sync(storage.head, key)
    except FileNotFoundError:
        raise Gone(GONE) from None


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    """The object's bytes, read in a worker thread; the connection goes back to the pool (or is
    closed) when the answer ends, also when the client left mid-way."""

    def read() -> Iterator[bytes]:
        yield from body.iter_chunks(READ_CHUNK)

    try:
        async for chunk in iterate_in_threadpool(read()):
            yield chunk
    finally:
        await to_thread.run_sync(body.close)


def _unsatisfiable(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "InvalidRange"


async def _range_problem(storage: S3Storage, key: str) -> Problem:
    try:
        size = await to_thread.run_sync(storage.size_of, key)
    except FileNotFoundError:
        return Gone(GONE)
    return range_not_satisfiable(size)


def range_not_satisfiable(size: int) -> Problem:
    """The ``416`` for a range past the end of a result of ``size`` bytes (local or in a bucket)."""
    return Problem(
        f"The range is outside the file's {size} bytes.",
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )
