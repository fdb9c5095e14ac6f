"""PostgreSQL's pooled connections are pinged only when in doubt (``db.ping_when_doubtful``): a
connection back from a statement a moment ago is used as it is (no ``SELECT 1`` round trip before
each statement), while one the server closed meanwhile (a restart, ``pg_terminate_backend``) or one
idle longer than ``PING_IDLE_AFTER`` is pinged, and a failed ping replaces the pool's connections:
the next claim or transaction reconnects instead of failing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from filejobs import db as db_module
from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.testing import make_job
from tests.services import migrated_database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with migrated_database("postgresql", tmp_path) as database:
        yield database


@pytest.fixture
def pings(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The connections pinged from now on (every engine of ``db`` shares the dialect's class)."""
    pinged: list[Any] = []
    dialect_class = type(db.engine.dialect)
    real = dialect_class.do_ping

    def counted(self: Any, dbapi_connection: Any) -> bool:
        pinged.append(dbapi_connection)
        return bool(real(self, dbapi_connection))

    monkeypatch.setattr(dialect_class, "do_ping", counted)
    return pinged


def backend_pid(db: Database) -> int:
    with db.read_connection() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate_all(db: Database) -> int:
    """Close every connection of ``db``'s database from the server's side (as a restart does);
    returns once they are gone."""
    with db.engine.connect() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar_one()
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def test_a_connection_back_a_moment_ago_is_not_pinged(db: Database, pings: list[Any]) -> None:
    first = backend_pid(db)
    job = repository.insert_job(db, make_job())
    assert repository.claim_job(db, job.id, owner="w", lease_seconds=30) is not None
    assert backend_pid(db) == first
    assert pings == []


def test_a_connection_idle_too_long_is_pinged(
    db: Database, pings: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_pid(db)
    monkeypatch.setattr(db_module, "PING_IDLE_AFTER", 0.0)
    assert backend_pid(db) == first  # the ping passed: the same connection
    assert len(pings) == 1


@pytest.mark.parametrize("durable", [True, False])
def test_connections_closed_by_the_server_reconnect_without_an_error(
    db: Database, pings: list[Any], durable: bool
) -> None:
    job = repository.insert_job(db, make_job())
    before = backend_pid(db)
    db.write_one(text("SELECT 1"), {}, durable=durable)  # the relaxed engine's pool too
    assert terminate_all(db) >= 1
    # The claim (autocommit, on the engine named by ``durable``'s pool) and a transaction.
    statement = text("UPDATE jobs SET attempts = attempts WHERE id = :id RETURNING id")
    assert db.write_one(statement, {"id": job.id}, durable=durable) == [{"id": job.id}]
    assert repository.claim_job(db, job.id, owner="w", lease_seconds=30) is not None
    with db.write() as session:
        assert session.execute(text("SELECT 1")).scalar_one() == 1
    assert backend_pid(db) != before
    assert pings  # found closed by its poll(), then its ping failed: replaced


def test_a_closed_connection_counts_as_in_doubt(db: Database) -> None:
    """``fileno()`` of a closed psycopg connection raises its own OperationalError: that means a
    ping (which fails, and the connection is replaced), not an error out of the checkout."""
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.connect(url)
    assert db_module._has_input(conn) is False  # open and quiet
    conn.close()
    assert db_module._has_input(conn) is True
