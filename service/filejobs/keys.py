"""API keys: made by ``filejobs keys create``, stored only as a SHA-256 hash, checked per request.

A key is ``fj_`` + 43 characters of URL-safe base64 (32 random bytes). With 256 bits of entropy a
plain SHA-256 is the right hash: a slow password hash protects guessable secrets, and nothing about
a random 256-bit key is guessable. The first characters (``prefix``) are kept to tell keys apart
in listings.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from filejobs.db import Database
from filejobs.errors import Conflict, NotFound
from filejobs.ids import new_job_id
from filejobs.models import ApiKey, utcnow

KEY_PREFIX = "fj_"
SHOWN_CHARS = 10
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


@dataclass(frozen=True)
class Caller:
    """Who is asking: a key's id and name, or the anonymous caller of an open service."""

    key_id: str | None
    name: str

    @property
    def scope(self) -> str:
        """The tenant: whose jobs and idempotency keys these are ("" for anonymous)."""
        return self.key_id or ""


ANONYMOUS = Caller(key_id=None, name="anonymous")


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError("a key name is 1-100 letters, digits and . _ @ -, starting with a letter or digit")
    return name


def create_key(db: Database, name: str) -> tuple[ApiKey, str]:
    """A new key named ``name``; returns the row and the secret (shown once, never stored)."""
    check_name(name)
    secret = new_secret()
    key = ApiKey(
        id=new_job_id(),
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:SHOWN_CHARS],
        created_at=utcnow(),
    )
    try:
        with db.write() as session:
            session.add(key)
    except IntegrityError:
        raise Conflict(f"A key named {name!r} exists already.") from None
    return key, secret


def list_keys(db: Database) -> list[ApiKey]:
    with db.read() as session:
        return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at))).all())


def revoke_key(db: Database, name: str, *, now: datetime | None = None) -> ApiKey:
    """Revoke the key named ``name`` (its jobs stay, reachable by nobody until retention)."""
    with db.write() as session:
        key = session.exec(select(ApiKey).where(col(ApiKey.name) == name)).first()
        if key is None:
            raise NotFound(f"No key named {name!r}.")
        if key.revoked_at is None:
            session.exec(update(ApiKey).where(col(ApiKey.id) == key.id).values(revoked_at=now or utcnow()))
            session.refresh(key)
        return key


def find_key(db: Database, secret: str) -> ApiKey | None:
    """The active key whose secret this is, or None."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    with db.read() as session:
        return session.exec(
            select(ApiKey).where(col(ApiKey.key_hash) == hash_key(secret), col(ApiKey.revoked_at).is_(None))
        ).first()


def active_key_ids(db: Database, key_ids: set[str]) -> set[str]:
    """Those of ``key_ids`` that name keys not revoked (one query for all of them)."""
    if not key_ids:
        return set()
    with db.read() as session:
        return set(
            session.exec(
                select(ApiKey.id).where(col(ApiKey.id).in_(key_ids), col(ApiKey.revoked_at).is_(None))
            ).all()
        )


def any_key(db: Database) -> bool:
    """Whether a key was ever made. Revoked keys count: revoking the last key must not re-open /v1
    to everyone (make a new key, or start afresh, to change that)."""
    with db.read() as session:
        return session.exec(select(ApiKey.id).limit(1)).first() is not None


class AuthGate:
    """Whether keys are required, re-read from the database at most every ``ttl`` seconds (keys
    are made by ``filejobs keys create`` in another process)."""

    def __init__(self, db: Database, *, always: bool, ttl: float = 1.0) -> None:
        self.db = db
        self.always = always
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value = False
        self._read_at = float("-inf")
        self._reading: asyncio.Future[bool] | None = None

    def known(self) -> bool | None:
        """:meth:`required` if it can be answered without the database (else None)."""
        if self.always:
            return True
        with self._lock:
            if time.monotonic() - self._read_at < self.ttl:
                return self._value
        return None

    def required(self) -> bool:
        known = self.known()
        if known is not None:
            return known
        value = any_key(self.db)
        with self._lock:
            self._value, self._read_at = value, time.monotonic()
        return value

    async def arequired(self) -> bool:
        """:meth:`required` on the event loop: when the database must be asked, one read in a
        thread for every request asking meanwhile."""
        known = self.known()
        if known is not None:
            return known
        reading = self._reading
        if reading is None or reading.get_loop() is not asyncio.get_running_loop():
            reading = self._reading = asyncio.ensure_future(to_thread.run_sync(self.required))
        try:
            return await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None
