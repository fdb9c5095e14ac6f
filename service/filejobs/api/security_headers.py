"""Security headers on every answer: an ASGI middleware around the app (static files, Starlette's
own 404/405 and event streams get them too), and :func:`secured` for the answers of the upload's
fast path, which sits outside it (the status poll's, outside all of FastAPI, adds
:func:`headers_for` itself), so that they pay for no wrapper (the middleware's per-answer header
merge was a tenth of a poll's CPU).

* every answer: ``X-Content-Type-Options: nosniff`` (a browser never guesses HTML from content)
  and ``X-Frame-Options: DENY`` (no page of this origin inside another site's frame);
* the dashboard (``/`` and ``/static/``): a Content-Security-Policy its plain files work under
  (scripts, styles and images from this origin only, thumbnails from ``blob:`` URLs, requests to
  this origin only; no inline script or style, no plugins, no framing);
* everything else, result downloads included: ``default-src 'none'; sandbox``, so that a result
  of untrusted content opened in a browser runs nothing and reaches nothing, even when rendered;
* the API docs (``/docs``, served offline from this origin): scripts, styles, images,
  workers and requests from this origin only; inline script and style allowed there alone
  (FastAPI's page builder writes the Swagger UI start-up inline).

A header the answer sets itself is left as it is.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_EVERYWHERE = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"))
_DASHBOARD = (*_EVERYWHERE, (b"content-security-policy", DASHBOARD_CSP.encode()))
_API = (*_EVERYWHERE, (b"content-security-policy", API_CSP.encode()))
_DOCS_HEADERS = (*_EVERYWHERE, (b"content-security-policy", DOCS_CSP.encode()))
_DOCS = "/docs"


def headers_for(path: str) -> tuple[tuple[bytes, bytes], ...]:
    """The headers an answer to ``path`` gets."""
    if path == "/" or path.startswith("/static/"):
        return _DASHBOARD
    if path.startswith(_DOCS):
        return _DOCS_HEADERS
    return _API


def secured(response: Response, path: str) -> Response:
    """``response`` with the headers an answer to ``path`` gets, for the fast paths' own answers
    (job bodies, 304s, problems: none of them sets any of these headers itself)."""
    response.raw_headers.extend(headers_for(path))
    return response


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in extra if header[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
