"""Holds on resumable uploads that every API node sees (one request at a time writes an upload).

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own,
kept for the hold; when the holder dies its connection closes and the lock goes with it, as a
``flock`` goes with a dead process. The connections come from an engine without a pool: a hold
is one connection for the length of one request, so their number is the number of requests
writing uploads at once (each key holds at most ``MAX_RESUMABLE_UPLOADS``).
SQLite (one machine): an exclusive ``flock`` on a file per name under ``<data dir>/tus-locks``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import Connection

from filejobs.db import Database, make_engine
from filejobs.errors import Locked

#: Seconds between two tries for a lock another request holds.
LOCK_POLL = 0.02


class Hold(Protocol):
    def release(self) -> None: ...


class UploadLocks(Protocol):
    def try_hold(self, name: str) -> Hold | None:
        """Hold ``name`` (None at once when another holds it)."""


def hold(locks: UploadLocks, name: str, wait: float) -> Hold:
    """Hold ``name``, waiting up to ``wait`` s for another holder (then 423)."""
    deadline = time.monotonic() + wait
    while True:
        held = locks.try_hold(name)
        if held is not None:
            return held
        if time.monotonic() >= deadline:
            raise Locked(
                "Another request is writing this upload; try again once it has ended.",
                headers={"Retry-After": "1"},
            )
        time.sleep(LOCK_POLL)


def _key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name``."""
    return int.from_bytes(
        hashlib.sha256(b"filejobs-tus-lock:" + name.encode()).digest()[:8], "big", signed=True
    )


class _AdvisoryHold:
    def __init__(self, conn: Connection, key: int) -> None:
        self._conn: Connection | None = conn
        self._key = key

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            conn.commit()
        except Exception:
            with contextlib.suppress(Exception):
                conn.invalidate()  # the server ends the session, and the lock with it
        finally:
            with contextlib.suppress(Exception):
                conn.close()


class AdvisoryLocks:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url, null_pool=True)

    def try_hold(self, name: str) -> Hold | None:
        key = _key(name)
        conn = self.engine.connect()
        try:
            held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
            conn.commit()  # not "idle in transaction" while held
        except BaseException:
            conn.close()
            raise
        if not held:
            conn.close()
            return None
        return _AdvisoryHold(conn, key)

    def close(self) -> None:
        self.engine.dispose()


class _FileHold:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the lock goes with the descriptor


class FileLocks:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def try_hold(self, name: str) -> Hold | None:
        path = self.root / hashlib.sha256(name.encode()).hexdigest()[:32]
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return _FileHold(fd)

    def close(self) -> None:
        return None


def upload_locks(db: Database, data_dir: Path) -> AdvisoryLocks | FileLocks:
    """Advisory locks on PostgreSQL (every node), else lock files in the data directory."""
    if db.engine.dialect.name == "postgresql":
        return AdvisoryLocks(db.url)
    return FileLocks(data_dir / "tus-locks")
