"""Which process sweeps: one active sweeper however many API nodes run.

PostgreSQL: a session-level advisory lock on a connection the leader keeps open. When the leader
dies its connection closes, the lock goes with it, and another node takes it on its next try.
SQLite (one machine): an exclusive ``flock`` on ``<database>.sweeper-lock``, released by the kernel
when the holder dies. Two sweepers at once would still be safe (every change is a conditional
update); the lock keeps them from doing the same work twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import Connection

from filejobs.db import Database

log = logging.getLogger(__name__)

#: The advisory lock's key: any fixed 64-bit number; this one spells "filejobs" in ASCII.
ADVISORY_KEY = int.from_bytes(b"filejobs", "big") & 0x7FFF_FFFF_FFFF_FFFF


class SweepLock(Protocol):
    def acquire(self) -> bool:
        """True when this process is (still) the sweeper; never blocks."""

    def release(self) -> None: ...

    @property
    def held(self) -> bool:
        """Whether the last :meth:`acquire` got the lock (no I/O: any thread may ask)."""


class AdvisoryLock:
    """``pg_try_advisory_lock`` held on a dedicated connection for as long as we lead."""

    def __init__(self, db: Database, key: int = ADVISORY_KEY) -> None:
        self.db = db
        self.key = key
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()  # not left "idle in transaction" between passes
                return True
            except Exception:
                log.warning("lost the sweeper lock's connection; trying to take the lock again")
                self._drop()
        conn = self.db.engine.connect()
        try:
            held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not held:
            conn.close()
            return False
        self._conn = conn
        log.info("this process is now the sweeper")
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                self._conn.commit()
            self._drop()


class FileLock:
    """An exclusive, non-blocking ``flock`` held for as long as we lead."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def sweep_lock(db: Database, data_dir: Path) -> SweepLock:
    """The lock for ``db``'s sweepers: advisory on PostgreSQL, else a file beside the database."""
    if db.engine.dialect.name == "postgresql":
        return AdvisoryLock(db)
    database = db.engine.url.database
    if database and database != ":memory:":
        return FileLock(Path(f"{database}.sweeper-lock"))
    return FileLock(data_dir / "sweeper.lock")
