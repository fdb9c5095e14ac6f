"""Engine and sessions. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writers.

Use :meth:`Database.write` for anything that changes rows (an immediate transaction on SQLite,
so two writers queue on the busy timeout instead of failing with "database is locked" when a
read transaction tries to upgrade) and :meth:`Database.read` for pure reads.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection
from sqlalchemy.sql import Executable
from sqlmodel import Session, create_engine

from filejobs.pg_statement import AutocommitConnections, PgStatement

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, null_pool: bool = False, synchronous: str = "FULL") -> Engine:
    """Create the engine for ``url``, with SQLite tuned for many threads and processes.

    ``null_pool`` opens a connection per use (for one-off tools such as migrations).
    ``synchronous``: ``FULL`` (a commit survives power loss) or ``NORMAL`` (a crash of the process
    loses nothing; a power loss may lose the last commits). On PostgreSQL ``NORMAL`` is
    ``synchronous_commit=off``: a commit returns before its WAL is flushed (a crash of the server
    may lose the last ones; the next durable commit, or the WAL writer a moment later, flushes them).
    """
    parsed = make_url(url)
    pooling: dict[str, Any] = {"poolclass": NullPool} if null_pool else {"pool_size": 20, "max_overflow": 40}
    if parsed.get_backend_name() != "sqlite":
        if synchronous == "FULL":
            return ping_when_doubtful(create_engine(url, **pooling))
        options = " ".join(filter(None, [str(parsed.query.get("options", "")), "-c synchronous_commit=off"]))
        return ping_when_doubtful(create_engine(url, connect_args={"options": options}, **pooling))

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


def ping_when_doubtful(engine: Engine) -> Engine:
    """``engine``'s pooled connections are checked out as ``pool_pre_ping`` would (a ``SELECT 1``,
    and on failure the pool's connections replaced, as after a server restart), but only when there
    is a reason to doubt them: the server wrote to the connection while it sat idle in the pool (a
    restart, ``pg_terminate_backend`` or an idle timeout closes it with a message or an EOF, which
    one ``poll()`` sees, no round trip), or it was idle longer than :data:`PING_IDLE_AFTER`
    seconds (a peer gone without a word). A pre-ping on every checkout cost a round trip before
    each statement or transaction: two of a Celery job's few."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None:  # just connected
            return
        if not _in_doubt(dbapi_conn, time.monotonic() - idle_since):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # As pool_pre_ping: this connection and every older one in the pool are replaced.
            raise InvalidatePoolError(f"the connection failed its ping: {exc}") from exc

    return engine


#: Seconds a pooled PostgreSQL connection may sit idle and still be used without a ping.
PING_IDLE_AFTER = 10.0
_IDLE_SINCE = "filejobs_idle_since"


def _in_doubt(dbapi_conn: Any, idle_for: float) -> bool:
    """Whether a connection idle for ``idle_for`` seconds is pinged before use (as the pool's are)."""
    return idle_for >= PING_IDLE_AFTER or _has_input(dbapi_conn)


def _has_input(dbapi_conn: Any) -> bool:
    """Whether the server sent something (or closed) on an idle connection: one ``poll()``."""
    try:
        poller = select.poll()
        poller.register(dbapi_conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except Exception:  # closed (psycopg raises its OperationalError), or no socket to ask: ping
        return True


class Database:
    """The engine plus the two ways to open a session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._relaxed_engine = make_engine(url, synchronous="NORMAL")
        # write_one's statements on PostgreSQL, compiled once each: {(durable, id): (statement, compiled)},
        # and the autocommit connections they run on (by durability: the engines' connect arguments).
        self._pg_statements: dict[tuple[bool, int], tuple[Executable, PgStatement]] = {}
        self._autocommit: dict[bool, AutocommitConnections] = {}
        if not self.is_sqlite:
            self._autocommit = {
                True: AutocommitConnections(self.engine, _in_doubt),
                False: AutocommitConnections(self._relaxed_engine, _in_doubt),
            }
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

    def write_one(
        self, statement: Executable, params: Mapping[str, Any], *, durable: bool = True
    ) -> Sequence[Mapping[str, Any]]:
        """One writing statement in a transaction of its own (no ORM session: for a hot statement,
        e.g. the worker's claim, whose session cost more than the statement); the rows it returned.
        On PostgreSQL it runs in autocommit: one round trip, no ``BEGIN`` or ``COMMIT`` of its own,
        on a psycopg connection kept in autocommit for such statements, without SQLAlchemy's
        execution or pool around it (:mod:`filejobs.pg_statement`)."""
        if self.is_sqlite:
            engine = self.engine if durable else self._relaxed_engine
            with self._write_turn, engine.begin() as conn:
                return [dict(row) for row in conn.execute(statement, params).mappings()]
        key = (durable, id(statement))
        known = self._pg_statements.get(key)
        if known is None or known[0] is not statement:
            known = self._pg_statements[key] = (statement, PgStatement(self._autocommit[durable], statement))
        return known[1].run(params)

    def write_many(
        self, statement: Executable, params: Sequence[Mapping[str, Any]], *, durable: bool = True
    ) -> list[Sequence[Mapping[str, Any]]]:
        """``statement`` once per set of ``params``, all in one transaction (on SQLite one turn of
        the write lock and one commit: a worker's claims of several jobs); the rows each returned."""
        engine = self.engine if durable else self._relaxed_engine
        with self._write_turn, engine.begin() as conn:
            return [[dict(row) for row in conn.execute(statement, one).mappings()] for one in params]

    def open_connections(self) -> None:
        """Open now, not on the first statement, the connections :meth:`write_one` runs on
        (PostgreSQL; nothing on SQLite): a worker's first job then pays no connection set-up."""
        for connections in self._autocommit.values():
            connections.give_back(connections.take())

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
        for connections in self._autocommit.values():
            connections.close_all()
        self.engine.dispose()
        self._relaxed_engine.dispose()
