"""Server-side ``Idempotency-Key`` for ``POST /v1/jobs`` (IETF httpapi draft, Stripe's semantics).

Per caller (API key) and key, one record:

- none (or expired): this request claims the key (``in_progress``, with a lease the upload renews)
  and goes on; the job insert marks the record ``done`` in the same transaction, so a job and its
  record commit together or not at all.
- ``in_progress`` under a live lease: another request with this key is still uploading → ``409``.
  A lease that expired, or whose holder process is gone, is taken over.
- ``done``: the request's fingerprint (processor, params, the file's SHA-256, size and name) is
  compared once its body has been read: the same → the original job is answered again; different
  → ``422``. Nothing of the repeated upload is kept.

Concurrent duplicates make exactly one job: the record's primary key lets one claim win.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from filejobs.db import Database
from filejobs.errors import BadRequest, Conflict
from filejobs.models import IdempotencyKey, utcnow

IN_PROGRESS = "in_progress"
DONE = "done"
#: Printable ASCII without spaces at the ends, as the draft's examples; long enough for a UUID,
#: a hash or the client's "<sha256>:<name>:<processor>:<params-hash>".
KEY_PATTERN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")


@dataclass(frozen=True)
class Claim:
    """This request holds the key; ``token`` proves it in every later write."""

    scope: str
    key: str
    token: str


@dataclass(frozen=True)
class Existing:
    """The key was used before, by a request that made ``job_id``."""

    scope: str
    key: str
    job_id: str
    fingerprint: str


def parse_key(value: str) -> str:
    if not KEY_PATTERN.fullmatch(value):
        raise BadRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters.", title="Invalid Idempotency-Key"
        )
    return value


def fingerprint(
    *,
    processor: str,
    params: dict[str, Any],
    sha256: str,
    size: int,
    name: str,
    callback_url: str | None = None,
) -> str:
    """What makes two requests under one Idempotency-Key the same request.

    ``callback_url`` counts only when given, so a key recorded before it counted keeps its print.
    """
    fields: dict[str, Any] = {
        "processor": processor,
        "params": params,
        "sha256": sha256,
        "size": size,
        "name": name,
    }
    if callback_url is not None:
        fields["callback_url"] = callback_url
    document = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def begin(
    db: Database,
    *,
    scope: str,
    key: str,
    token: str,
    holder: str,
    ttl: timedelta,
    lease_seconds: float,
    holder_is_dead: Any = None,
    now: datetime | None = None,
) -> Claim | Existing:
    """Claim ``key`` for this request, or say who used it. Raises ``Conflict`` while in progress."""
    now = now or utcnow()
    try:
        with db.write() as session:
            record = session.get(IdempotencyKey, (scope, key), with_for_update=True)
            if record is not None and _stale(record, now, holder_is_dead):
                session.delete(record)
                session.flush()
                record = None
            if record is None:
                session.add(
                    IdempotencyKey(
                        scope=scope,
                        key=key,
                        state=IN_PROGRESS,
                        token=token,
                        holder=holder,
                        created_at=now,
                        expires_at=now + ttl,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                    )
                )
                return Claim(scope=scope, key=key, token=token)
            if record.state == DONE and record.job_id and record.fingerprint:
                return Existing(scope=scope, key=key, job_id=record.job_id, fingerprint=record.fingerprint)
    except IntegrityError:
        pass  # a concurrent request inserted the record first: it is in progress
    raise Conflict(
        "A request with this Idempotency-Key is still in progress; retry when it has finished.",
        headers={"Retry-After": "1"},
    )


def find_done(db: Database, *, scope: str, key: str, now: datetime | None = None) -> Existing | None:
    """What ``key`` made, when a finished request used it and it has not expired: what
    :func:`begin` would answer, read without taking the write lock (a replay, such as a batch run
    again, is the common case). None: ask :func:`begin`."""
    now = now or utcnow()
    with db.read() as session:
        record = session.get(IdempotencyKey, (scope, key))
        if record is None or record.state != DONE or not record.job_id or not record.fingerprint:
            return None
        if record.expires_at <= now:
            return None
        return Existing(scope=scope, key=key, job_id=record.job_id, fingerprint=record.fingerprint)


def find_done_many(
    db: Database, *, scope: str, keys: list[str], now: datetime | None = None
) -> dict[str, Existing]:
    """:func:`find_done` for many keys in one read: the finished, unexpired ones among ``keys``."""
    if not keys:
        return {}
    now = now or utcnow()
    query = select(IdempotencyKey).where(
        col(IdempotencyKey.scope) == scope,
        col(IdempotencyKey.key).in_(keys),
        col(IdempotencyKey.state) == DONE,
        col(IdempotencyKey.expires_at) > now,
    )
    with db.read() as session:
        return {
            record.key: Existing(
                scope=scope, key=record.key, job_id=record.job_id, fingerprint=record.fingerprint
            )
            for record in session.exec(query)
            if record.job_id and record.fingerprint
        }


def _stale(record: IdempotencyKey, now: datetime, holder_is_dead: Any) -> bool:
    if record.expires_at <= now:
        return True
    if record.state != IN_PROGRESS:
        return False
    if record.lease_expires_at is None or record.lease_expires_at <= now:
        return True
    return bool(holder_is_dead and record.holder and holder_is_dead(record.holder))


def renew(db: Database, claim: Claim, *, lease_seconds: float) -> bool:
    with db.write() as session:
        return (
            session.exec(
                update(IdempotencyKey)
                .where(*_held(claim))
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            ).rowcount
            == 1
        )


def release(db: Database, claim: Claim) -> None:
    """The request failed before making a job: the key is free again."""
    with db.write() as session:
        session.exec(delete(IdempotencyKey).where(*_held(claim)))


def complete(session: Session, claim: Claim, *, job_id: str, fingerprint: str) -> bool:
    """In the job insert's transaction: the key now names ``job_id``. False if no longer held."""
    return (
        session.exec(
            update(IdempotencyKey)
            .where(*_held(claim))
            .values(state=DONE, job_id=job_id, fingerprint=fingerprint, lease_expires_at=None)
        ).rowcount
        == 1
    )


def forget(db: Database, existing: Existing) -> None:
    """The job a key made is gone (deleted): the key may be used again."""
    with db.write() as session:
        session.exec(
            delete(IdempotencyKey).where(
                col(IdempotencyKey.scope) == existing.scope,
                col(IdempotencyKey.key) == existing.key,
                col(IdempotencyKey.job_id) == existing.job_id,
            )
        )


def expire(db: Database, *, now: datetime | None = None) -> int:
    """Delete records past their time to live (the sweeper)."""
    with db.write() as session:
        return session.exec(
            delete(IdempotencyKey).where(col(IdempotencyKey.expires_at) <= (now or utcnow()))
        ).rowcount


def _held(claim: Claim) -> tuple[Any, ...]:
    return (
        col(IdempotencyKey.scope) == claim.scope,
        col(IdempotencyKey.key) == claim.key,
        col(IdempotencyKey.token) == claim.token,
        col(IdempotencyKey.state) == IN_PROGRESS,
    )
