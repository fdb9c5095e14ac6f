"""``GET /v1/jobs/{id}/result`` for an output stored in a bucket: streamed through the API (one
``Range`` passed on to the store), or, with ``FILEJOBS_RESULT_REDIRECT``, a ``307`` to a
short-lived presigned URL. Either way with the Content-Type and Content-Disposition the local
backend's file response has. An object gone from the bucket is a ``410`` problem.
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

from filejobs.errors import Gone, Problem
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
    range_header: str | None,
    redirect: bool,
    redirect_ttl: float,
) -> Response:
    disposition = content_disposition(name)
    if redirect:
        try:
            await to_thread.run_sync(storage.size_of, key)  # a HEAD: a vanished object is a 410 here
        except FileNotFoundError:
            raise Gone(GONE) from None
        url = storage.presigned_get(key, disposition=disposition, content_type=content_type, ttl=redirect_ttl)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    byte_range = range_header.strip() if range_header else None
    if byte_range is not None and not SINGLE_RANGE.fullmatch(byte_range):
        byte_range = None
    try:
        got = await to_thread.run_sync(storage.open_read, key, byte_range)
    except FileNotFoundError:
        raise Gone(GONE) from None
    except Exception as exc:
        if byte_range is not None and _unsatisfiable(exc):
            raise await _range_problem(storage, key) from None
        raise
    headers = {
        "Content-Disposition": disposition,
        "Content-Length": str(got["ContentLength"]),
        "Accept-Ranges": "bytes",
    }
    if got.get("ETag"):
        headers["ETag"] = got["ETag"]
    status = 200
    if got.get("ContentRange"):
        headers["Content-Range"] = got["ContentRange"]
        status = 206
    return StreamingResponse(
        _chunks(got["Body"]), status_code=status, media_type=content_type, headers=headers
    )


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
