"""``GET /v1/jobs/{id}`` without FastAPI's routing and dependency machinery: the status poll.

Clients poll status far more often than they do anything else, and FastAPI spends most of such a
request matching routes and solving dependencies. :class:`StatusApp`, the FastAPI app ``create_app``
makes, answers the plain poll (no query string, so no ``?wait=``) before any of FastAPI runs (its
telemetry check, Starlette's error middleware, the middleware stack: together a sixth of a poll's
CPU), with the same bytes as the route (body, ``ETag``, ``304``, security headers), when it can do
so without the database telling it who the caller is (an open service, or keys known to be absent).
Everything else, including every error (404, 401, 429), is left to the real route, which also
documents the endpoint in OpenAPI; so is a poll whose answer fails (nothing has been sent then): the
route meets the same failure and answers it as every error is answered (a problem+json ``500``).

A poll mostly finds the job as it was at the previous poll, so the answer is kept: the ETag names
the row's ``version``, which every change to the job bumps, so the rendered body and headers of an
ETag never change. The last :data:`ANSWERS_KEPT` answers (at most :data:`ANSWER_BYTES` of bodies)
are kept by ETag; a poll then costs the row's read and a dictionary look-up, and the row is only
converted and rendered (pydantic) when its version is new. The ASGI messages are sent directly, with
the headers encoded once, rather than through a Starlette ``Response``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from filejobs.api.auth import anonymous_and_open
from filejobs.api.deps import scope_services
from filejobs.api.fast_upload import PATH as UPLOAD_PATH
from filejobs.api.fast_upload import FastUpload
from filejobs.api.security_headers import headers_for
from filejobs.ids import is_job_id
from filejobs.jobs.fast_read import JobReader
from filejobs.keys import ANONYMOUS
from filejobs.models import etag_for, job_public, none_match

log = logging.getLogger(__name__)
PREFIX = "/v1/jobs/"
_START = len(PREFIX)
#: Rendered answers kept (least recently polled dropped first) and the most bytes their bodies hold.
ANSWERS_KEPT = 512
ANSWER_BYTES = 2 * 1024 * 1024
#: A body longer than this is rendered for each poll, never kept.
LONGEST_KEPT = 64 * 1024

Headers = tuple[tuple[bytes, bytes], ...]
#: What every answer of this path carries after its own headers (as the route's do).
_SECURITY: Headers = headers_for(PREFIX)
_JSON = (b"content-type", b"application/json")


class KeptAnswers:
    """The 200 answers of the last polls by ETag: headers and body. Bounded; the event loop's own."""

    def __init__(self, entries: int = ANSWERS_KEPT, body_bytes: int = ANSWER_BYTES) -> None:
        self._entries: OrderedDict[str, tuple[Headers, bytes]] = OrderedDict()
        self._max_entries = entries
        self._max_bytes = body_bytes
        self._bytes = 0

    def get(self, etag: str) -> tuple[Headers, bytes] | None:
        answer = self._entries.get(etag)
        if answer is not None:
            self._entries.move_to_end(etag)
        return answer

    def put(self, etag: str, answer: tuple[Headers, bytes]) -> None:
        size = len(answer[1])
        if size > min(LONGEST_KEPT, self._max_bytes) or etag in self._entries:
            return
        self._entries[etag] = answer
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)


class StatusApp(FastAPI):
    """The FastAPI app with the poll answered before any of it runs (its telemetry check, Starlette's
    error middleware, the middleware stack): those cost a poll more than the answer itself. The
    plain upload's fast path (:class:`~filejobs.api.fast_upload.FastUpload`) is handed
    ``POST /v1/jobs`` here too, for the same reason."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kept = KeptAnswers()
        self.upload = FastUpload(self._routed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == UPLOAD_PATH:
            await self.upload(scope, receive, send)
            return
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope.get("query_string")
            and scope["path"].startswith(PREFIX)
        ):
            try:
                answer = await self._answer(scope)
            except Exception:  # nothing sent: the route meets the same error and answers it
                log.debug("the status fast path failed; the route answers", exc_info=True)
                answer = None
            if answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": list(headers)})
                await send({"type": "http.response.body", "body": body})
                return
        await super().__call__(scope, receive, send)

    async def _routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling (what the upload's fast path leaves to the route)."""
        await super().__call__(scope, receive, send)

    async def _answer(self, scope: Scope) -> tuple[int, Headers, bytes] | None:
        """The poll's answer, or None to pass it on to the app."""
        job_id: str = scope["path"][_START:]
        services = scope_services(scope)
        if services is None or not is_job_id(job_id):
            return None
        authorization = if_none_match = None
        cors = bool(services.settings.cors_origins)
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
            elif name == b"origin" and cors:
                return None  # a browser on another origin: the route answers, inside the CORS middleware
        if not await anonymous_and_open(services.auth, authorization):
            return None  # a key to check: the route does it
        reader: JobReader = services.reader
        row = await reader.aget_row(job_id, owner=ANONYMOUS.scope)
        if row is None:
            return None  # the route answers the 404
        etag = etag_for(job_id, row[JobReader.VERSION])
        if none_match(etag, if_none_match):
            return 304, ((b"etag", etag.encode()), *_SECURITY), b""
        kept = self.kept.get(etag)
        if kept is None:
            body = job_public(reader.job_of(row)).model_dump_json().encode()
            length = (b"content-length", str(len(body)).encode())
            kept = (((b"etag", etag.encode()), length, _JSON, *_SECURITY), body)
            self.kept.put(etag, kept)
        return 200, *kept
