"""``/v1/jobs/{id}/events`` and ``/v1/events``: job changes as Server-Sent Events.

Each stream is a coroutine waiting on a :class:`~filejobs.events.subscription.Subscription` that
the process's one :class:`~filejobs.events.feed.ChangeFeed` fills: no thread per stream, no query
per stream while nothing changes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Header
from fastapi.responses import Response, StreamingResponse

from filejobs.api.auth import CallerDep
from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.errors import BadRequest, NotFound, ServiceUnavailable, TooManyRequests
from filejobs.events import rows, wire
from filejobs.events.subscription import Deleted, Subscription
from filejobs.keys import Caller
from filejobs.models import JobStatus, utcnow
from filejobs.services import Services

router = APIRouter(tags=["events"])

#: Most changed jobs a resumed ``/v1/events`` sends; more, and it sends ``reset`` instead.
CATCH_UP_LIMIT = 500
_NUMBER = re.compile(r"[0-9]{1,19}")  # what the schema says, besides the empty value
TERMINAL = frozenset(status.value for status in JobStatus if status.terminal)
#: Seconds a client refused a stream (429, 503) is told to wait.
STREAM_RETRY_AFTER = "5"


def _data(content_schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": content_schema}


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` holds JSON of ``data``'s schema when the event is named ``name``."""
    return {"if": {"properties": {"event": {"const": name}}}, "then": {"properties": {"data": _data(data)}}}


#: One event as it arrives (the fields of the SSE wire format), the way FastAPI documents its own
#: event streams: ``itemSchema`` (OpenAPI 3.2's keyword for a stream's items; tools that read
#: only 3.1 ignore it and see a text/event-stream body). Keep-alive comments and the first
#: ``retry:`` carry no data, so they are no events.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["job", "deleted", "reset"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "pattern": "^[0-9]{1,19}$"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "allOf": [
        _event("job", {"$ref": "#/components/schemas/JobPublic"}),
        _event(
            "deleted",
            {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        ),
        _event("reset", {"type": "object"}),
    ],
}
STREAM_DOCS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: `event: job` (data: the job body), `event: deleted` "
        '(data: `{"id": ...}`), `event: reset` (`/v1/events` only: reload the list), `: keep-alive` '
        "comments.",
        "content": {"text/event-stream": {"itemSchema": SSE_EVENT}},
    },
}

LAST_EVENT_ID = Header(
    alias="Last-Event-ID",
    description="The `id` of the last event received: a reconnect resumes after it.",
    json_schema_extra={"pattern": "^[0-9]{0,19}$"},
)


def _last_event_id(value: str) -> int | None:
    if value.strip() == "":
        return None
    if not _NUMBER.fullmatch(value.strip()):
        raise BadRequest("Last-Event-ID must be an event id this service sent (digits).")
    return int(value)


def _open(
    services: Services, caller: Caller, subscription: Subscription, events: AsyncIterator[bytes]
) -> Response:
    """Take a place for the stream of ``events`` (or refuse it: 429 over the key's share, 503 over
    the process's), and answer with the response that gives it back when it ends. Nothing is
    awaited between the count and the subscription: streams opened at once cannot all slip in."""
    feed, settings = services.feed, services.settings
    per_key = settings.max_event_streams_per_key
    if caller.key_id is not None and per_key and feed.streams_of(subscription.owner) >= per_key:
        raise TooManyRequests(
            f"This key has {per_key} event streams open on this server, as many as one key may; "
            "close one or try again shortly.",
            headers={"Retry-After": STREAM_RETRY_AFTER},
        )
    if feed.streams >= settings.max_event_streams:
        raise ServiceUnavailable(
            "This server holds as many event streams as it may; try again shortly.",
            headers={"Retry-After": STREAM_RETRY_AFTER},
        )
    feed.subscribe(subscription)
    return wire.EventStreamResponse(events, on_close=partial(feed.unsubscribe, subscription))


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Follow one job: an event per change, until it finishes",
    response_class=StreamingResponse,
    responses={
        **STREAM_DOCS,
        204: {"description": "The job finished, and `Last-Event-ID` names its last change: nothing to send."},
        **problem_docs(400, 401, 404, 422, 429, 503),
    },
)
async def job_events(
    job_id: str,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: Annotated[str, LAST_EVENT_ID] = "",
) -> Response:
    """The job's current state first (unless `Last-Event-ID` is its current version), then one
    event per change (`id:` the job's version; progress at most every `FILEJOBS_EVENTS_THROTTLE`
    seconds, every status change kept). The stream ends after the event with a final status
    (`succeeded`, `failed`, `cancelled`) or after `deleted`."""
    after = _last_event_id(last_event_id)
    job = await services.reader.aget(job_id, owner=caller.scope)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    if after is not None and after > job.version:
        after = None  # not an id of this job's events: start afresh
    if job.status in TERMINAL and after == job.version:
        return Response(status_code=204)  # an EventSource stops reconnecting on 204
    subscription = Subscription(owner=caller.scope, job_id=job.id, throttle=services.settings.events_throttle)
    return _open(services, caller, subscription, _job_stream(services, subscription, after or 0))


async def _job_stream(services: Services, subscription: Subscription, after: int) -> AsyncIterator[bytes]:
    job_id = subscription.job_id
    assert job_id is not None
    yield wire.retry()
    subscription.mark_sent(after, job_id)
    while True:
        # The row itself, now (subscribed already, so no change falls between), and again
        # whenever the stream idles: a deletion by another process on SQLite is seen so.
        job = await services.reader.aget(job_id, owner=subscription.owner)
        if job is None:
            subscription.push(Deleted(job_id, subscription.owner))
        else:
            subscription.push(job)  # dropped unless newer than what was sent
        while changes := await subscription.changes(services.settings.events_heartbeat):
            for change in changes:
                if isinstance(change, Deleted):
                    yield wire.deleted_event(change.id)
                    return
                yield wire.job_event(change, str(change.version))
                if change.status in TERMINAL:
                    return
        if subscription.closed:  # the server is stopping, or the key was revoked
            return
        yield wire.HEARTBEAT


@router.get(
    "/v1/events",
    summary="Follow all of your jobs: an event per change",
    response_class=StreamingResponse,
    responses={**STREAM_DOCS, **problem_docs(400, 401, 422, 429, 503)},
)
async def all_events(
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: Annotated[str, LAST_EVENT_ID] = "",
) -> Response:
    """An event for every change of one of the caller's jobs, new ones included (`id:` a cursor).
    Reconnecting with `Last-Event-ID` first sends, oldest first, every job that changed since
    (in its current state; a few seconds before it too, for writes that committed late), or
    `reset` when that is more than 500 jobs. Never ends on its own."""
    after = _last_event_id(last_event_id)
    subscription = Subscription(owner=caller.scope, throttle=services.settings.events_throttle)
    return _open(services, caller, subscription, _all_stream(services, subscription, after))


async def _all_stream(
    services: Services, subscription: Subscription, after: int | None
) -> AsyncIterator[bytes]:
    now = wire.cursor_of(utcnow())
    cursor = min(after, now) if after is not None else now  # no id from the future
    yield wire.retry()
    if after is not None:
        since = wire.time_of(cursor) - services.feed.lookback
        missed = await to_thread.run_sync(
            partial(rows.owner_changed_since, services.db, subscription.owner, since, CATCH_UP_LIMIT)
        )
        if len(missed) > CATCH_UP_LIMIT:
            cursor = max(cursor, wire.cursor_of(utcnow()))
            yield wire.reset_event(str(cursor))
        else:
            for view in missed:
                subscription.push(view)
    while True:
        changes = await subscription.changes(services.settings.events_heartbeat)
        if subscription.closed:  # the server is stopping, or the key was revoked
            return
        if not changes:
            yield wire.HEARTBEAT
        for change in changes:
            if isinstance(change, Deleted):
                yield wire.deleted_event(change.id)
            else:
                cursor = max(cursor, wire.cursor_of(change.updated_at))
                yield wire.job_event(change, str(cursor))
