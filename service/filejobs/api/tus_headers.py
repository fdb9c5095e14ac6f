"""The tus protocol's envelope on ``/v1/uploads``: ``Tus-Resumable`` on every answer (errors
included, whoever raised them: auth, rate limits, routing), and the ``412`` (with ``Tus-Version``)
for a request that does not speak tus 1.0.0: :data:`TusVersionDep`, which the routes declare after
the caller's key (a request without a valid key gets its ``401`` first, as everywhere on ``/v1``),
before a byte of the body is read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from filejobs.tus import protocol

PREFIX = "/v1/uploads"
_VERSION = (b"tus-resumable", protocol.VERSION.encode())


def is_tus_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def check_version(request: Request) -> None:
    protocol.check_version(request.headers.get("tus-resumable"))


TusVersionDep = Annotated[None, Depends(check_version)]


class TusHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_tus_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"tus-resumable"]
                message["headers"] = [*headers, _VERSION]
            await send(message)

        await self.app(scope, receive, send_with_version)
