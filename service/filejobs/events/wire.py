"""Server-Sent Events on the wire (FastAPI's encoder), and the cursor of ``/v1/events``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

from fastapi.sse import format_sse_event
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from filejobs.models import Job, job_public

#: Milliseconds a client waits before reconnecting (the ``retry:`` field).
RETRY_MS = 2000
HEARTBEAT = b": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class EventStreamResponse(StreamingResponse):
    """A stream's response: ``text/event-stream``, never cached or buffered by a proxy. ``on_close``
    runs when the response is over, however it ends (even if the client left before the first
    byte, when ``events`` never starts)."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def retry() -> bytes:
    return format_sse_event(retry=RETRY_MS)


def job_event(view: SimpleNamespace | Job, event_id: str) -> bytes:
    body = job_public(cast(Job, view)).model_dump_json()
    return format_sse_event(event="job", id=event_id, data_str=body)


def deleted_event(job_id: str) -> bytes:
    return format_sse_event(event="deleted", data_str=f'{{"id": "{job_id}"}}')


def reset_event(event_id: str) -> bytes:
    return format_sse_event(event="reset", id=event_id, data_str="{}")


def cursor_of(updated_at: datetime) -> int:
    """A change's place in ``/v1/events``: microseconds since the epoch of its ``updated_at``."""
    return (updated_at - _EPOCH) // _MICROSECOND


def time_of(cursor: int) -> datetime:
    return _EPOCH + cursor * _MICROSECOND
