"""``GET /v1/jobs/{id}`` without FastAPI's routing and dependency machinery: the status poll.

Clients poll status far more often than they do anything else, and FastAPI spends most of such a
request matching routes and solving dependencies. This ASGI middleware answers the plain poll (no
query string, so no ``?wait=``) itself, with the same body, ``ETag`` and ``304`` as the route, when
it can do so without the database telling it who the caller is (an open service, or keys known to
be absent). Everything else, including every error (404, 401, 429), is left to the real route,
which also documents the endpoint in OpenAPI.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from filejobs.api.auth import open_without_lookup
from filejobs.api.deps import scope_services
from filejobs.api.responses import conditional_job_response
from filejobs.api.security_headers import secured
from filejobs.ids import is_job_id
from filejobs.keys import ANONYMOUS

PREFIX = "/v1/jobs/"


class FastStatus:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope.get("query_string")
            and scope["path"].startswith(PREFIX)
            and await self._answer(scope, receive, send)
        ):
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the poll and return True, or return False (having sent nothing) to pass it on."""
        job_id: str = scope["path"][len(PREFIX) :]
        services = scope_services(scope)
        if services is None or not is_job_id(job_id):
            return False
        headers = Headers(scope=scope)
        if not open_without_lookup(services.auth, headers.get("authorization")):
            return False  # a key to check: the route does it
        job = await services.reader.aget(job_id, owner=ANONYMOUS.scope)
        if job is None:
            return False  # the route answers the 404
        response = conditional_job_response(job, headers.get("if-none-match"))
        await secured(response, scope["path"])(scope, receive, send)
        return True
