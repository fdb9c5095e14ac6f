"""``POST /v1/jobs`` without FastAPI's routing and dependency machinery: the plain upload.

Batch clients upload thousands of small files; for each, FastAPI would match routes, solve five
dependencies and wrap the response. :class:`FastUpload` takes the plain upload (no query string,
no ``Idempotency-Key``, an open service: no key to check, and no cross-origin request when CORS is
on: the CORS middleware answers those) and runs the very same
:func:`filejobs.jobs.intake.submit_upload` as the route, answering its problems the same way;
the job is dispatched after the answer is sent, as the route's background task does. Everything
else goes to the route, which also documents the endpoint in OpenAPI.

The app ``create_app`` makes (:class:`filejobs.api.fast_status.StatusApp`) hands it ``POST /v1/jobs``
before any of FastAPI runs, as it answers the status poll: FastAPI's telemetry check (three
OpenTelemetry provider look-ups per request), Starlette's error middleware and the middleware stack
cost a small upload about a twentieth of its CPU. So the fast path answers an error it did not
expect itself, as the app's handler would (a problem+json ``500``, logged), when nothing was sent.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from filejobs.api.auth import anonymous_and_open
from filejobs.api.deps import scope_services
from filejobs.api.problems import problem_response, unexpected_response
from filejobs.api.responses import RETRY_AFTER, job_json, submitted_response
from filejobs.api.security_headers import headers_for, secured
from filejobs.api.upload_body import upload_body
from filejobs.errors import ClientGone, Problem
from filejobs.jobs.commands import dispatch
from filejobs.jobs.intake import submit_upload
from filejobs.keys import ANONYMOUS
from filejobs.models import Job, etag_of
from filejobs.services import Services

PATH = "/v1/jobs"
_AFTER = ((b"retry-after", RETRY_AFTER.encode()),)
_JSON_AND_SECURITY = ((b"content-type", b"application/json"), *headers_for(PATH))


def queued_answer(job: Job) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of :func:`filejobs.api.responses.queued_response` (then
    :func:`secured`) for ``job``: the same headers in the same order, the same bytes."""
    body = job_json(job)
    return [
        (b"etag", etag_of(job).encode()),
        (b"location", f"{PATH}/{job.id}".encode()),
        *_AFTER,
        (b"content-length", str(len(body)).encode()),
        *_JSON_AND_SECURITY,
    ], body


class FastUpload:
    """The plain upload's answer to ``POST /v1/jobs`` (the only request the app hands it); any other
    such request goes to ``app`` (FastAPI's own ``__call__``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = await self._services(scope)
        if services is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._upload(services, scope, receive, sending)
        except Exception:
            if started:
                raise  # the server closes the connection (and logs it)
            await unexpected_response(Request(scope, receive))(scope, receive, send)

    async def _upload(self, services: Services, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            submitted = await submit_upload(
                services=services,
                owner=ANONYMOUS.scope,
                headers=request.headers,
                body=upload_body(services, request, ANONYMOUS),
            )
        except ClientGone:
            await secured(Response(status_code=400), PATH)(scope, receive, send)  # nobody listens
            return
        except Problem as problem:
            await secured(problem_response(problem, request), PATH)(scope, receive, send)
            return
        if submitted.replayed:  # never here (no Idempotency-Key), but answered right all the same
            await secured(submitted_response(submitted), PATH)(scope, receive, send)
        else:  # the route's 202, byte for byte, without a Response object
            headers, body = queued_answer(submitted.job)
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        await dispatch(hub=services.hub, dispatcher=services.dispatcher, job_id=submitted.job.id)

    async def _services(self, scope: Scope) -> Services | None:
        """The services when this ``POST /v1/jobs`` (all the app hands over) is a plain upload this
        path answers, else None."""
        if scope.get("query_string"):
            return None
        services = scope_services(scope)
        if services is None:
            return None
        headers = Headers(scope=scope)
        if "idempotency-key" in headers:
            return None
        if services.settings.cors_origins and "origin" in headers:
            return None  # a browser on another origin: the CORS middleware around the route answers
        # A key to check, or keys required: the route answers.
        return services if await anonymous_and_open(services.auth, headers.get("authorization")) else None
