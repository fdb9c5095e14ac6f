"""``GET /v1/jobs/{id}/result`` for an output on the local disk: Starlette's ``FileResponse`` (its
``ETag``, ``Last-Modified``, single and multiple byte ranges, ``If-Range``), plus what it leaves out:

- ``If-None-Match`` (RFC 9110 §13.1.2): a ``304`` when it matches the file's ETag (``*``, or a tag
  compared weakly), so a browser or a cache revalidating a download gets no body again;
- a ``Range`` it cannot satisfy (every range starts past the end) is a ``416`` problem+json with
  ``Content-Range: bytes */<size>``, as the bucket backend answers (Starlette's is an empty
  ``text/plain``);
- a ``Range`` in another unit, or one that is not a valid ``bytes`` range, is ignored: the whole
  file, ``200`` (RFC 9110 §14.2: a server MUST ignore an unknown unit and MAY ignore an invalid
  range; Starlette answered a ``text/plain`` ``400``).

The ranges are read by Starlette's own parser, so what is passed on is exactly what it serves
(``tests/test_result_file.py`` pins the names this uses).
"""

from __future__ import annotations

import os
from pathlib import Path

from anyio import to_thread
from fastapi import Response
from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from filejobs.api.result_download import GONE, range_not_satisfiable
from filejobs.errors import Gone
from filejobs.models import none_match


class ResultFile(FileResponse):
    """A ``FileResponse`` that serves the whole file when told to ignore the request's ``Range``."""

    ignore_range = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ignore_range:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        await super().__call__(scope, receive, send)


async def file_result(
    path: Path, *, name: str | None, content_type: str | None, headers: Headers
) -> Response:
    """The answer to a download of ``path`` given the request's ``headers``; ``410`` when the file
    is not there."""
    try:
        stat_result = await to_thread.run_sync(os.stat, path)
    except FileNotFoundError:
        raise Gone(GONE) from None
    response = ResultFile(
        path,
        stat_result=stat_result,
        filename=name,
        media_type=content_type,
        content_disposition_type="attachment",
    )
    etag = response.headers["etag"]
    if none_match(etag, headers.get("if-none-match")):
        return Response(
            status_code=304, headers={"ETag": etag, "Last-Modified": response.headers["last-modified"]}
        )
    byte_range = headers.get("range")
    if_range = headers.get("if-range")
    if byte_range is not None and (if_range is None or response._should_use_range(if_range)):
        size = stat_result.st_size
        try:
            response._parse_range_header(byte_range, size)
        except MalformedRangeHeader:
            response.ignore_range = True
        except RangeNotSatisfiable:
            raise range_not_satisfiable(size) from None
    return response
