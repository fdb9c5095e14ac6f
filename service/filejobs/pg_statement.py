"""One hot statement run in autocommit on a psycopg connection kept for such statements, without
SQLAlchemy's execution machinery or pool around it.

A Celery job's claim and quiet finish are one statement each (:meth:`filejobs.db.Database.write_one`).
Through ``Connection.execute`` each cost the worker's pool process about 120 µs of CPU more than the
same statement on the bare psycopg connection (the option engine's isolation-level switch on checkout
and check-in, the execution context, the result's metadata: the claim returns 36 columns). Here the
statement is compiled once for the engine's dialect, and the same bind and result processors
SQLAlchemy would apply are applied (the column types' own, e.g. :class:`~filejobs.models.UTCDateTime`).

It runs on one of :class:`AutocommitConnections`: connections opened as the engine opens its own (its
URL, connect arguments and events: ``synchronous_commit=off`` for the relaxed engine), then kept apart
from its pool, in autocommit for good. Checking one of the pool's connections out, switching it to
autocommit and back and checking it in (with the pool's reset) cost more CPU than the statement's own
client side (docs/performance.md, round six). An idle connection waits in a last-in, first-out list;
one in doubt (the server wrote to it while it sat idle, or it sat longer than the engine's ping
interval) is pinged first, and a failed ping closes every idle one, as after a server restart, before
a new one is opened. At most as many are open as threads ran such statements at once: the worker's
threads and its finisher, a number the settings bound.

A driver error is raised as SQLAlchemy's wrapped one (``sqlalchemy.exc.OperationalError`` …); a
connection the error broke, or one interrupted mid-statement, is closed, not kept.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

Processor = Callable[[Any], Any]
#: Whether an idle connection must be pinged before use: (the driver's connection, seconds idle).
InDoubt = Callable[[Any, float], bool]


class AutocommitConnections:
    """psycopg connections in autocommit for :class:`PgStatement`, opened like ``engine``'s own."""

    def __init__(self, engine: Engine, in_doubt: InDoubt) -> None:
        self.engine = engine
        self._in_doubt = in_doubt
        #: (connection, monotonic time it went idle), the most recent last.
        self._idle: list[tuple[Any, float]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _open(self) -> Any:
        pooled = self.engine.raw_connection()  # the engine's connect arguments and events
        conn = pooled.driver_connection
        assert conn is not None
        pooled.detach()  # ours from now on: the engine's pool neither counts it nor resets it
        conn.autocommit = True
        return conn

    def take(self) -> Any:
        """An idle connection (pinged first when in doubt), or a new one."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's sockets are not its own
                self._idle, self._pid = [], os.getpid()
            conn, since = self._idle.pop() if self._idle else (None, 0.0)
        if conn is None:
            return self._open()
        if self._in_doubt(conn, time.monotonic() - since):
            try:
                self.engine.dialect.do_ping(conn)
            except Exception:
                # As the engine's pool does after a failed ping: this one and every older one go.
                self.close_all()
                self.discard(conn)
                return self._open()
        return conn

    def give_back(self, conn: Any) -> None:
        """Keep ``conn`` for the next statement (closed instead when it is broken)."""
        if conn.closed or conn.broken:
            self.discard(conn)
            return
        with self._lock:  # taken in this process: take() dropped a parent's list first
            self._idle.append((conn, time.monotonic()))

    @staticmethod
    def discard(conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def close_all(self) -> None:
        """Close the idle connections (those of this process)."""
        with self._lock:
            idle, self._idle = self._idle, []
            ours = self._pid == os.getpid()
        if ours:
            for conn, _ in idle:
                self.discard(conn)


class PgStatement:
    """``statement`` compiled once for ``engine``'s (PostgreSQL) dialect, run by :meth:`run`."""

    def __init__(self, connections: AutocommitConnections, statement: Executable) -> None:
        self.connections = connections
        self.engine = engine = connections.engine
        compiled = statement.compile(dialect=engine.dialect)  # type: ignore[attr-defined]
        if compiled.positional or "POSTCOMPILE" in compiled.string:
            raise ValueError("only statements with named, plain bind parameters")
        self.sql: str = compiled.string
        #: The statement's own values (e.g. ``status='running'``); the caller's parameters add to them.
        self.constants: dict[str, Any] = {
            name: bind.effective_value for bind, name in compiled.bind_names.items() if not bind.required
        }
        self.binds: dict[str, Processor] = dict(compiled._bind_processors)
        self._columns = [(column.keyname, column.type) for column in compiled._result_columns]
        self.keys = [key for key, _ in self._columns]
        #: Result processors by the driver's type codes, found on the first run that returned columns.
        self._results: list[Processor | None] | None = None
        self._lock = threading.Lock()

    def _result_processors(self, description: Any) -> list[Processor | None]:
        with self._lock:
            if self._results is None:
                dialect = self.engine.dialect
                if not self._columns:  # a text() statement: the driver's names and values
                    self.keys = [column.name for column in description]
                    self._results = [None] * len(description)
                else:
                    self._results = [
                        type_._cached_result_processor(dialect, column.type_code)
                        for (_, type_), column in zip(self._columns, description, strict=True)
                    ]
            return self._results

    def run(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run the statement with ``params`` in autocommit; the rows it returned, as dicts."""
        values = {**self.constants, **params}
        for key, process in self.binds.items():
            values[key] = process(values[key])
        conn = self.connections.take()
        try:
            with conn.cursor() as cursor:
                cursor.execute(self.sql, values)
                # Not ``cursor.description`` each time: psycopg builds a Column per column for it.
                result = cursor.pgresult
                rows = cursor.fetchall() if result is not None and result.nfields else []
                known = self._results
                processors = (known or self._result_processors(cursor.description)) if rows else []
        except self.engine.dialect.loaded_dbapi.Error as exc:
            self.connections.give_back(conn)  # closed instead when the error broke it
            raise DBAPIError.instance(
                self.sql, values, exc, self.engine.dialect.loaded_dbapi.Error, dialect=self.engine.dialect
            ) from exc
        except BaseException:
            self.connections.discard(conn)  # in an unknown state (e.g. interrupted mid-statement)
            raise
        self.connections.give_back(conn)
        keys = self.keys
        return [
            {
                key: (process(value) if process is not None else value)
                for key, process, value in zip(keys, processors, row, strict=True)
            }
            for row in rows
        ]
