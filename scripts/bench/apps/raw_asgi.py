"""The HTTP ceiling: a bare ASGI app that reads the request body, counts its bytes and answers 202.

No parsing, no disk: an upload can go no faster than this through uvicorn on this machine.
Run: ``uvicorn scripts.bench.apps.raw_asgi:app``.
"""

from __future__ import annotations

from typing import Any

Scope = dict[str, Any]


async def lifespan(receive: Any, send: Any) -> None:
    """Answer uvicorn's startup and shutdown (nothing to start)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    if scope["type"] != "http":
        return
    count = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        count += len(message.get("body", b""))
        more = message.get("more_body", False)
    status = 200 if scope["method"] == "GET" else 202
    body = b'{"bytes": %d}' % count
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
