"""``HEAD`` wherever ``GET`` is served: the GET's status and headers (``Content-Length``
included), no body.

FastAPI routes answer only the methods they declare, and a route declared for GET answers HEAD
with 405. This ASGI middleware runs a HEAD request as a GET and sends the response's start as it
is, and an empty body in place of the body. A body still streaming (an event stream, a file) is
stopped at its first chunk: the response is then over for the client, and what it held (an event
stream's place, an open file) is given back at once. The OpenAPI document lists GET only, as HEAD
is the HTTP framework's business; the ``Allow`` of a 405 names HEAD wherever GET is allowed.
"""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: tus (``/v1/uploads/{id}``) has a HEAD of its own, and no GET.
TUS = "/v1/uploads/"


class _BodyCut(Exception):
    """The GET's body began: a HEAD answer is complete without it."""


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"].startswith(TUS):
            await self.app(scope, receive, send)
            return
        finished = False

        async def send_head(message: Message) -> None:
            nonlocal finished
            if finished:
                raise _BodyCut()
            if message["type"] == "http.response.body":
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _BodyCut()
                return
            await send(message)

        with contextlib.suppress(_BodyCut):
            await self.app({**scope, "method": "GET"}, receive, send_head)
