"""One sweeper among many API nodes: the PostgreSQL advisory lock (and, on one machine, the flock)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from sqlalchemy import text

from filejobs.db import Database
from filejobs.jobs.sweep_lock import ADVISORY_KEY, AdvisoryLock, FileLock
from filejobs.migrate import upgrade
from filejobs.settings import Settings
from filejobs.testing import Server, wait_until

#: pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low 32), objsubid 1.
HOLDERS = text(
    """
    SELECT a.client_port
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = :high AND l.objid::bigint = :low AND l.objsubid = 1
    """
)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(Settings(database_url=pg_url).resolved_database_url)
    try:
        yield database
    finally:
        database.dispose()


def lock_holder_ports(db: Database) -> list[int]:
    """The client ports of the sessions holding the sweeper lock in this database."""
    with db.engine.connect() as conn:
        rows = conn.execute(HOLDERS, {"high": ADVISORY_KEY >> 32, "low": ADVISORY_KEY & 0xFFFFFFFF})
        return [int(port) for (port,) in rows]


def local_ports(server: Server) -> set[int]:
    """The local ports of the server process's TCP connections (its database sessions among them)."""
    try:
        return {c.laddr.port for c in psutil.Process(server.pid).net_connections(kind="tcp") if c.laddr}
    except psutil.NoSuchProcess:
        return set()


def holder(db: Database, servers: list[Server]) -> Server | None:
    """The server whose session holds the lock, if exactly one session holds it."""
    ports = lock_holder_ports(db)
    assert len(ports) <= 1, f"{len(ports)} sessions hold the sweeper lock"
    if not ports:
        return None
    owners = [server for server in servers if ports[0] in local_ports(server)]
    return owners[0] if len(owners) == 1 else None


@pytest.mark.scaleout
@pytest.mark.e2e
def test_one_sweeper_among_api_nodes(tmp_path: Path, pg_url: str, db: Database) -> None:
    upgrade(db.url)
    env = {"FILEJOBS_DATABASE_URL": pg_url, "FILEJOBS_WORKERS": "0", "FILEJOBS_SWEEP_INTERVAL": "0.5"}
    servers = [
        Server(tmp_path / f"node-{n}" / "data", env=env, log_path=tmp_path / f"node-{n}.log") for n in (1, 2)
    ]
    try:
        for server in servers:
            server.start()
        leader = wait_until(lambda: holder(db, servers), timeout=20, what="a server to hold the lock")
        other = servers[1] if leader is servers[0] else servers[0]
        assert "this process is now the sweeper" in leader.log_text()
        assert "this process is now the sweeper" not in other.log_text()

        leader.kill9()
        taken = wait_until(
            lambda: holder(db, [other]), timeout=20, what="the other server to take the sweeper lock"
        )
        assert taken is other
        wait_until(
            lambda: "this process is now the sweeper" in other.log_text(),
            timeout=10,
            what="the new sweeper's log line",
        )
        assert len(lock_holder_ports(db)) == 1
    finally:
        for server in servers:
            server.stop()
        for index, server in enumerate(servers, 1):
            print(f"----- node {index} log (tail) -----\n{server.log_tail(40)}")


def test_advisory_lock_is_held_by_one_session(db: Database, pg_url: str) -> None:
    other_db = Database(db.url)
    first, second = AdvisoryLock(db), AdvisoryLock(other_db)
    try:
        assert first.acquire()
        assert first.acquire(), "the holder lost its own lock"
        assert not second.acquire()
        assert len(lock_holder_ports(db)) == 1
        # Holding the lock between passes leaves no transaction open on its session.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            states = conn.execute(
                "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted "
                # this test's database only: other tests' servers hold the same key in theirs
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (ADVISORY_KEY >> 32, ADVISORY_KEY & 0xFFFFFFFF),
            ).fetchall()
        assert states == [("idle",)], states
        first.release()
        assert lock_holder_ports(db) == []
        assert second.acquire()
        assert not first.acquire()
    finally:
        first.release()
        second.release()
        other_db.dispose()


def test_file_lock_is_held_by_one_holder(tmp_path: Path) -> None:
    path = tmp_path / "sweeper.lock"
    first, second = FileLock(path), FileLock(path)
    try:
        assert first.acquire()
        assert first.acquire()
        assert not second.acquire()
        first.release()
        assert second.acquire()
        assert not first.acquire()
    finally:
        first.release()
        second.release()
