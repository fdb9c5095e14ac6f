"""The tus protocol's envelope on ``/v1/uploads``: ``Tus-Resumable`` on every answer (errors
included, whoever raised them: auth, rate limits, routing), and ``412`` with ``Tus-Version`` for a
request that does not speak tus 1.0.0, before authentication or a byte of its body is read.
``OPTIONS`` (discovery, and CORS preflights) needs no ``Tus-Resumable``."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from filejobs.api.problems import problem_response
from filejobs.errors import Problem
from filejobs.tus import protocol

PREFIX = "/v1/uploads"
_VERSION = (b"tus-resumable", protocol.VERSION.encode())


def is_tus_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


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

        if scope["method"] != "OPTIONS":
            sent = next((v for k, v in scope["headers"] if k == b"tus-resumable"), None)
            try:
                protocol.check_version(sent.decode("latin-1") if sent is not None else None)
            except Problem as problem:
                await problem_response(problem)(scope, receive, send_with_version)
                return
        await self.app(scope, receive, send_with_version)
