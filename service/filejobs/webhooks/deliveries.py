"""The sender's queries on ``webhook_deliveries`` (the outbox inserts them; callers' listing and
retries are :mod:`filejobs.webhooks.history`): claims, attempts' outcomes, the job's notification
state, the metrics' figures and retention.

A claim is one conditional UPDATE (``status = 'pending' AND next_attempt_at <= now``) that pushes
``next_attempt_at`` past the attempt's longest time: a sender that dies mid-attempt leaves the row
to come due again, and two senders never make the same attempt (at-least-once, not at-most-once).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlmodel import Session, col

from filejobs.db import Database
from filejobs.models import DeliveryStatus, Job, WebhookDelivery, WebhookEndpoint, WebhookSecret, utcnow
from filejobs.webhooks import signing
from filejobs.webhooks.endpoints import disable

PENDING = DeliveryStatus.pending.value
DELIVERED = DeliveryStatus.delivered.value
FAILED = DeliveryStatus.failed.value
DELIVERY_PREFIX = "msg_"

_D = WebhookDelivery.__table__  # type: ignore[attr-defined]
_E = WebhookEndpoint.__table__  # type: ignore[attr-defined]


def lane_of(endpoint_id: str | None, owner: str) -> str:
    """What one sender's per-endpoint concurrency counts: the endpoint, or all of a key's one-off
    callback URLs together."""
    return endpoint_id if endpoint_id is not None else f"cb:{owner}"


@dataclass(frozen=True)
class Claimed:
    """One attempt to make: where to, signed with what, and the body."""

    id: str
    lane: str
    owner: str
    endpoint_id: str | None
    job_id: str | None
    url: str
    secrets: list[str]
    payload: str
    attempts: int


def claim_due(
    db: Database,
    *,
    capacity: dict[str, int],
    default_capacity: int,
    limit: int,
    lease_seconds: float,
    now: datetime | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries, at most ``capacity[lane]`` (else ``default_capacity``)
    of each lane; lanes with no room left are not even looked at, so a slow endpoint's backlog
    never hides the others' deliveries."""
    now = now or utcnow()
    full = [lane for lane, room in capacity.items() if room <= 0]
    full_endpoints = [lane for lane in full if not lane.startswith("cb:")]
    full_callbacks = [lane.removeprefix("cb:") for lane in full if lane.startswith("cb:")]
    query = (
        select(_D.c.id, _D.c.endpoint_id, _D.c.owner)
        .where(_D.c.status == PENDING, _D.c.next_attempt_at <= now)
        .order_by(_D.c.next_attempt_at)
        .limit(limit * 4)
    )
    if full_endpoints:
        query = query.where(or_(_D.c.endpoint_id.is_(None), _D.c.endpoint_id.not_in(full_endpoints)))
    if full_callbacks:
        query = query.where(or_(_D.c.endpoint_id.is_not(None), _D.c.owner.not_in(full_callbacks)))
    room = dict(capacity)
    chosen: list[str] = []
    with db.read_connection() as conn:
        for delivery_id, endpoint_id, owner in conn.execute(query):
            lane = lane_of(endpoint_id, owner)
            if room.setdefault(lane, default_capacity) <= 0:
                continue
            room[lane] -= 1
            chosen.append(delivery_id)
            if len(chosen) >= limit:
                break
    if not chosen:
        return []
    claimed: list[Claimed] = []
    with db.write(durable=False) as session:  # a lost claim only makes the row due again
        conn = session.connection()
        rows = conn.execute(
            update(_D)
            .where(_D.c.id.in_(chosen), _D.c.status == PENDING, _D.c.next_attempt_at <= now)
            .values(next_attempt_at=now + timedelta(seconds=lease_seconds), attempts=_D.c.attempts + 1)
            .returning(
                _D.c.id, _D.c.owner, _D.c.endpoint_id, _D.c.url, _D.c.job_id, _D.c.payload, _D.c.attempts
            )
        ).all()
        endpoints = {
            row.id: row
            for row in conn.execute(
                select(_E).where(_E.c.id.in_({row.endpoint_id for row in rows if row.endpoint_id}))
            )
        }
        default_secrets = {
            secret.owner: secret
            for secret in session.execute(
                select(WebhookSecret).where(
                    col(WebhookSecret.owner).in_({row.owner for row in rows if row.endpoint_id is None})
                )
            ).scalars()
        }
        orphans = []
        for row in rows:
            source = endpoints.get(row.endpoint_id) if row.endpoint_id else default_secrets.get(row.owner)
            if source is None or (row.endpoint_id and not source.enabled):
                orphans.append(row)  # its endpoint went (or was disabled) meanwhile: nowhere to send
                continue
            url = source.url if row.endpoint_id else row.url
            claimed.append(
                Claimed(
                    id=row.id,
                    lane=lane_of(row.endpoint_id, row.owner),
                    owner=row.owner,
                    endpoint_id=row.endpoint_id,
                    job_id=row.job_id,
                    url=url,
                    secrets=signing.signing_secrets(
                        source.secret, source.previous_secret, source.previous_secret_until, now
                    ),
                    payload=row.payload,
                    attempts=row.attempts,
                )
            )
        if orphans:
            conn.execute(
                update(_D)
                .where(_D.c.id.in_([row.id for row in orphans]), _D.c.status == PENDING)
                .values(
                    status=FAILED, finished_at=now, last_error="its webhook is gone or disabled; not sent"
                )
            )
            for job_id in {row.job_id for row in orphans if row.job_id}:
                settle_job(session, job_id)
    return claimed


def retry_delay(schedule: Sequence[float], attempts: int) -> float | None:
    """Seconds before the next attempt after ``attempts`` failed ones (±20 % jitter); None: give up."""
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * random.uniform(0.8, 1.2)


def record_delivered(db: Database, claimed: Claimed, *, status_code: int) -> None:
    now = utcnow()
    with db.write() as session:
        session.execute(
            update(_D)
            .where(_D.c.id == claimed.id, _D.c.status == PENDING)
            .values(
                status=DELIVERED,
                finished_at=now,
                last_attempt_at=now,
                last_status_code=status_code,
                last_error=None,
            )
        )
        if claimed.endpoint_id:
            session.execute(update(_E).where(_E.c.id == claimed.endpoint_id).values(failing_since=None))
        if claimed.job_id:
            settle_job(session, claimed.job_id)


def record_failed(
    db: Database,
    claimed: Claimed,
    *,
    status_code: int | None,
    error: str,
    schedule: Sequence[float],
    disable_after: float,
) -> str:
    """Record a failed attempt; returns ``retry`` (due again later), ``failed`` (given up) or
    ``disabled`` (a 410, or an endpoint failing for ``disable_after`` seconds, turned off)."""
    now = utcnow()
    delay = retry_delay(schedule, claimed.attempts)
    gone = status_code == 410
    values: dict[str, object] = {
        "last_attempt_at": now,
        "last_status_code": status_code,
        "last_error": error[:500],
    }
    if delay is None or gone:
        values.update(status=FAILED, finished_at=now)
    else:
        values.update(next_attempt_at=now + timedelta(seconds=delay))
    outcome = "retry" if delay is not None and not gone else "failed"
    with db.write() as session:
        session.execute(update(_D).where(_D.c.id == claimed.id, _D.c.status == PENDING).values(**values))
        if claimed.endpoint_id:
            endpoint = session.get(WebhookEndpoint, claimed.endpoint_id, with_for_update=True)
            if endpoint is not None and endpoint.enabled:
                endpoint.failing_since = endpoint.failing_since or now
                failing = (now - endpoint.failing_since).total_seconds()
                if gone:
                    disable(session, endpoint, "the receiver answered 410 Gone")
                    outcome = "disabled"
                elif failing >= disable_after:
                    disable(
                        session, endpoint, f"every attempt failed for {failing / 3600:.1f} h (last: {error})"
                    )
                    outcome = "disabled"
                else:
                    session.add(endpoint)
        if claimed.job_id and (outcome != "retry"):
            settle_job(session, claimed.job_id)
    return outcome


def settle_job(session: Session, job_id: str) -> None:
    """The job's ``notification``: pending while any delivery is, else failed if any failed, else
    delivered (a change of the job: its version moves, its streams hear it)."""
    counts = dict(
        session.execute(
            select(_D.c.status, func.count()).where(_D.c.job_id == job_id).group_by(_D.c.status)
        ).all()
    )
    state = PENDING if counts.get(PENDING) else FAILED if counts.get(FAILED) else DELIVERED
    jobs = Job.__table__  # type: ignore[attr-defined]
    session.execute(
        update(jobs)
        .where(jobs.c.id == job_id, or_(jobs.c.notification.is_(None), jobs.c.notification != state))
        .values(notification=state, version=jobs.c.version + 1, updated_at=utcnow())
    )


def pending_stats(db: Database) -> tuple[int, datetime | None]:
    """How many deliveries are undelivered, and when the oldest of them was made (for the metrics)."""
    query = select(func.count(), func.min(_D.c.created_at)).where(_D.c.status == PENDING)
    with db.read_connection() as conn:
        count, oldest = conn.execute(query).one()
    if isinstance(oldest, str):  # SQLite's MIN() loses the column's type: ISO text
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), oldest


def purge_finished(db: Database, *, cutoff: datetime) -> int:
    """Delete delivered and failed deliveries finished before ``cutoff`` (retention)."""
    with db.write() as session:
        result = session.connection().execute(
            delete(_D).where(_D.c.status.in_([DELIVERED, FAILED]), _D.c.finished_at < cutoff)
        )
        return int(result.rowcount)
