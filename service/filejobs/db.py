"""Engine and sessions. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writers.

Use :meth:`Database.write` for anything that changes rows (an immediate transaction on SQLite,
so two writers queue on the busy timeout instead of failing with "database is locked" when a
read transaction tries to upgrade) and :meth:`Database.read` for pure reads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool
from sqlmodel import Session, create_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, null_pool: bool = False, synchronous: str = "FULL") -> Engine:
    """Create the engine for ``url``, with SQLite tuned for many threads and processes.

    ``null_pool`` opens a connection per use (for one-off tools such as migrations).
    ``synchronous`` is SQLite's: ``FULL`` (a commit survives power loss) or ``NORMAL`` (a crash
    of the process loses nothing; a power loss may lose the last commits).
    """
    parsed = make_url(url)
    pooling: dict[str, Any] = {"poolclass": NullPool} if null_pool else {"pool_size": 20, "max_overflow": 40}
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **pooling)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **pooling,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL: a committed row survives power loss too, as every 202 promises.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """The engine plus the two ways to open a session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._relaxed_engine = make_engine(url, synchronous="NORMAL") if self.is_sqlite else self.engine
        # Re-entrant: a write may run code that opens another (same thread, same turn).
        self._write_turn: AbstractContextManager[Any] = threading.RLock() if self.is_sqlite else nullcontext()

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        On SQLite the writers of this process take turns on a lock first: SQLite's busy handler
        waits for a write lock by sleeping in steps of up to 100 ms, so writers of one process
        racing for it (API, sweeper, worker threads) would sleep long after it was free. Other
        processes still meet on the busy timeout.

        ``durable=False`` (SQLite: ``synchronous=NORMAL``, no fsync at commit) is for changes a
        power loss may undo harmlessly: a claim (the job is queued again), a lease renewal or a
        progress note. A later durable commit makes them durable too (one WAL)."""
        engine = self.engine if durable else self._relaxed_engine
        with self._write_turn, Session(engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def write_connection(self, *, durable: bool = True) -> Iterator[Connection]:
        """:meth:`write` as a Core connection (no ORM session: for one hot statement, e.g. the
        worker's claim, whose session cost more than the statement)."""
        engine = self.engine if durable else self._relaxed_engine
        with self._write_turn, engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (a deferred transaction on SQLite; never upgrades to a write)."""
        # Closing (not rolling back) keeps loaded objects usable; the pool ends the transaction.
        with Session(self._read_engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A Core connection for reads (a deferred transaction on SQLite), rolled back after."""
        with self._read_engine.connect() as conn:
            yield conn

    def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        with self.read() as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]

    def dispose(self) -> None:
        self.engine.dispose()
        self._relaxed_engine.dispose()
