"""CORS for browsers on other origins (``FILEJOBS_CORS_ORIGINS``), e.g. a tus client on another
site: Starlette's ``CORSMiddleware``, built from the settings the lifespan resolved (they are not
known when the app is made), with the tus request headers allowed and its answer headers exposed.
Without origins configured, requests pass untouched."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from filejobs.api.deps import scope_services
from filejobs.tus import protocol

METHODS = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")
#: Headers the API's own answers carry that a browser script may want besides the tus ones.
EXPOSED = ("Retry-After", "ETag", "Idempotent-Replayed")
MAX_AGE = 600


class Cors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: ASGIApp | None = None
        self._origins: tuple[str, ...] | None = None

    def _for(self, origins: list[str]) -> ASGIApp:
        if self._cors is None or self._origins != tuple(origins):
            self._origins = tuple(origins)
            self._cors = CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=METHODS,
                allow_headers=[*protocol.REQUEST_HEADERS, "If-None-Match", "Last-Event-ID"],
                expose_headers=[*protocol.EXPOSED, *EXPOSED],
                max_age=MAX_AGE,
            )
        return self._cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = scope_services(scope) if scope["type"] == "http" else None
        if services is None or not services.settings.cors_origins:
            await self.app(scope, receive, send)
            return
        await self._for(services.settings.cors_origins)(scope, receive, send)
