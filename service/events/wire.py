"""Server-Sent Events on the wire (FastAPI's encoder), and the cursor of ``/v1/events``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

from fastapi.sse import format_sse_event
from starlette.responses import StreamingResponse

from service.models import Job, job_public

#: Milliseconds a client waits before reconnecting (the ``retry:`` field).
RETRY_MS = 2000
HEARTBEAT = b": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """The stream's response: ``text/event-stream``, never cached or buffered by a proxy."""
    return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)


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
