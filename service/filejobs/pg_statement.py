"""One hot statement run in autocommit on a pooled psycopg connection, without SQLAlchemy's
execution machinery around it.

A Celery job's claim and quiet finish are one statement each (:meth:`filejobs.db.Database.write_one`).
Through ``Connection.execute`` each cost the worker's pool process about 120 µs of CPU more than the
same statement on the bare psycopg connection (the option engine's isolation-level switch on checkout
and check-in, the execution context, the result's metadata: the claim returns 36 columns). Here the
statement is compiled once for the engine's dialect; each run checks a connection out of the engine's
own pool (so its ``checkout`` events run: :func:`~filejobs.db.ping_when_doubtful`), sets it to
autocommit for the one statement, and applies the same bind and result processors SQLAlchemy would
(the column types' own, e.g. :class:`~filejobs.models.UTCDateTime`). A driver error is raised as
SQLAlchemy's wrapped one (``sqlalchemy.exc.OperationalError`` …), and a connection the error broke is
invalidated, not returned to the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

Processor = Callable[[Any], Any]


class PgStatement:
    """``statement`` compiled once for ``engine``'s (PostgreSQL) dialect, run by :meth:`run`."""

    def __init__(self, engine: Engine, statement: Executable) -> None:
        self.engine = engine
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
        pooled = self.engine.raw_connection()
        conn: Any = pooled.driver_connection
        try:
            conn.autocommit = True
            try:
                with conn.cursor() as cursor:
                    cursor.execute(self.sql, values)
                    # Not ``cursor.description`` each time: psycopg builds a Column per column for it.
                    result = cursor.pgresult
                    rows = cursor.fetchall() if result is not None and result.nfields else []
                    known = self._results
                    processors = (known or self._result_processors(cursor.description)) if rows else []
            finally:
                if not (conn.closed or conn.broken):
                    conn.autocommit = False  # no transaction is open: back as the pool expects it
        except self.engine.dialect.loaded_dbapi.Error as exc:
            if conn.closed or conn.broken:
                pooled.invalidate(exc)
            else:
                pooled.close()
            raise DBAPIError.instance(
                self.sql, values, exc, self.engine.dialect.loaded_dbapi.Error, dialect=self.engine.dialect
            ) from exc
        except BaseException:
            pooled.invalidate()  # in an unknown state (e.g. interrupted mid-statement)
            raise
        pooled.close()
        keys = self.keys
        return [
            {
                key: (process(value) if process is not None else value)
                for key, process, value in zip(keys, processors, row, strict=True)
            }
            for row in rows
        ]
