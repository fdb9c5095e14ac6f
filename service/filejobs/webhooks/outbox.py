"""The transactional outbox: delivery rows written in the transaction that changes the job.

:func:`record_job_event` runs inside the session that moves a job to its final status (see
:mod:`filejobs.jobs.repository`): when the job's key has endpoints that want the event (or the job
names a ``callback_url``), it writes one ``webhook_deliveries`` row per target with the exact body
to send, and marks the job's ``notification`` pending. The rows commit or roll back with the
status change, so a crash between "job finished" and "webhook sent" loses nothing: the sender
finds the rows when it next looks, here or on another node.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, event, func, insert, select, text, update
from sqlmodel import Session, col

from filejobs.ids import new_job_id
from filejobs.models import (
    DeliveryStatus,
    Job,
    JobStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
    job_public,
    utcnow,
)

#: The events a job's final status sends, by status.
JOB_EVENTS = {
    JobStatus.succeeded.value: "job.succeeded",
    JobStatus.failed.value: "job.failed",
    JobStatus.cancelled.value: "job.cancelled",
}
EVENT_TYPES = tuple(JOB_EVENTS.values())
TEST_EVENT = "webhook.test"
#: What a delivery over the key's pending bound is recorded with instead of being queued.
OVER_BOUND = "too many undelivered webhooks for this key (WEBHOOK_MAX_PENDING); not sent"

_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]
_ENDPOINTS = WebhookEndpoint.__table__  # type: ignore[attr-defined]
_JOBS = Job.__table__  # type: ignore[attr-defined]


#: The job's owner, status and callback URL with its key's enabled endpoints (a row each, or one
#: with NULLs): one statement, built once, on every final status of every job.
_TARGETS = (
    select(
        _JOBS.c.owner,
        _JOBS.c.status,
        _JOBS.c.callback_url,
        _ENDPOINTS.c.id.label("endpoint_id"),
        _ENDPOINTS.c.events,
    )
    .select_from(
        _JOBS.outerjoin(_ENDPOINTS, and_(_ENDPOINTS.c.owner == _JOBS.c.owner, _ENDPOINTS.c.enabled.is_(True)))
    )
    .where(_JOBS.c.id == bindparam("b_job_id"))
)

#: ``W <delivery id>`` on this channel tells every API process's webhook sender of new deliveries (not
#: the jobs table's trigger's: a process listens to job changes only while it has an event stream open).
CHANNEL = "filejobs_webhooks"


class Recorded:
    """How many transactions of this process have committed new deliveries: the sender compares it
    when a job changes here, and looks for due deliveries only when it moved (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def bump(self, _session: object = None) -> None:
        with self._lock:
            self.value += 1


RECORDED = Recorded()


def _tell(session: Session, first_id: str) -> None:
    """After this transaction commits: bump :data:`RECORDED`; on PostgreSQL also ``NOTIFY`` (sent at
    the commit, to every API process's change feed), so the sender wakes wherever it runs."""
    event.listen(session, "after_commit", RECORDED.bump, once=True)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": f"W {first_id}"}
        )


def new_delivery_id() -> str:
    return "msg_" + new_job_id()


def payload(event_type: str, data: dict[str, Any], at: datetime) -> str:
    """The body every attempt of one delivery sends: ``{"type", "timestamp", "data"}``."""
    return json.dumps(
        {"type": event_type, "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data},
        separators=(",", ":"),
    )


def record_job_event(session: Session, job_id: str, *, max_pending: int) -> int:
    """Queue the deliveries of the final status ``job_id`` was just moved to (in this transaction);
    returns how many were queued. Called after the UPDATE that changed the status."""
    conn = session.connection()
    found = conn.execute(_TARGETS, {"b_job_id": job_id}).all()
    if not found or found[0].status not in JOB_EVENTS:
        return 0
    first = found[0]
    owner, event_type, callback_url = first.owner, JOB_EVENTS[first.status], first.callback_url
    endpoints = [row.endpoint_id for row in found if row.endpoint_id is not None and event_type in row.events]
    if callback_url and session.get(WebhookSecret, owner) is None:
        callback_url = None  # nothing to sign with (the upload was refused without one: defensive)
    if not endpoints and not callback_url:
        return 0
    conn.execute(update(_JOBS).where(_JOBS.c.id == job_id).values(notification=DeliveryStatus.pending.value))
    job = conn.execute(select(_JOBS).where(_JOBS.c.id == job_id)).mappings().one()
    now = utcnow()
    body = payload(event_type, job_public(Job.model_construct(**job)).model_dump(mode="json"), now)
    pending = pending_count(session, owner)
    rows = [
        _row(
            owner=owner,
            endpoint_id=endpoint_id,
            url=None,
            job_id=job_id,
            event_type=event_type,
            body=body,
            now=now,
            over=pending + index >= max_pending,
        )
        for index, endpoint_id in enumerate(endpoints)
    ]
    if callback_url:
        rows.append(
            _row(
                owner=owner,
                endpoint_id=None,
                url=callback_url,
                job_id=job_id,
                event_type=event_type,
                body=body,
                now=now,
                over=pending + len(rows) >= max_pending,
            )
        )
    conn.execute(insert(_DELIVERIES), rows)
    _tell(session, rows[0]["id"])
    if all(item["status"] == DeliveryStatus.failed.value for item in rows):
        conn.execute(
            update(_JOBS).where(_JOBS.c.id == job_id).values(notification=DeliveryStatus.failed.value)
        )
    return len(rows)


def record_test_event(session: Session, endpoint: WebhookEndpoint, *, max_pending: int) -> WebhookDelivery:
    """Queue a ``webhook.test`` delivery to ``endpoint``."""
    now = utcnow()
    data = {"endpoint_id": endpoint.id, "message": "A test event from filejobs."}
    values = _row(
        owner=endpoint.owner,
        endpoint_id=endpoint.id,
        url=None,
        job_id=None,
        event_type=TEST_EVENT,
        body=payload(TEST_EVENT, data, now),
        now=now,
        over=pending_count(session, endpoint.owner) >= max_pending,
    )
    session.connection().execute(insert(_DELIVERIES), [values])
    _tell(session, values["id"])
    return WebhookDelivery.model_construct(**values)


def pending_count(session: Session, owner: str) -> int:
    query = select(func.count()).where(
        col(WebhookDelivery.owner) == owner, col(WebhookDelivery.status) == DeliveryStatus.pending.value
    )
    return int(session.connection().execute(query).scalar_one())


def _row(
    *,
    owner: str,
    endpoint_id: str | None,
    url: str | None,
    job_id: str | None,
    event_type: str,
    body: str,
    now: datetime,
    over: bool,
) -> dict[str, Any]:
    return {
        "id": new_delivery_id(),
        "owner": owner,
        "endpoint_id": endpoint_id,
        "url": url,
        "job_id": job_id,
        "event_type": event_type,
        "payload": body,
        "status": DeliveryStatus.failed.value if over else DeliveryStatus.pending.value,
        "attempts": 0,
        "next_attempt_at": now,
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": OVER_BOUND if over else None,
        "created_at": now,
        "finished_at": now if over else None,
    }
