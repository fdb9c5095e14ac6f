"""``filejobs migrate`` run by several nodes at once, and ``filejobs worker`` on the wrong backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from filejobs.db import Database
from filejobs.migrate import alembic_config
from filejobs.settings import Settings
from filejobs.testing import base_env, wait_until

MIGRATORS = 3
TIMEOUT = 120.0


def waiting_sessions(conn: psycopg.Connection[Any]) -> int:
    """Other sessions of this database that wait on a lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.scaleout
def test_concurrent_migrations_postgres(tmp_path: Path, pg_url: str) -> None:
    """Three ``filejobs migrate`` at once all succeed, and the schema ends at head.

    To make them overlap for certain (not just start together, which on a loaded machine can
    still run them one after the other), an open transaction of the test creates the
    ``alembic_version`` table first: every migrator blocks, either on that uncommitted table or on
    the migration lock, until all three are waiting; then the test rolls back and lets them race.
    """
    url = Settings(database_url=pg_url).resolved_database_url
    env = base_env({"FILEJOBS_DATABASE_URL": pg_url, "FILEJOBS_DATA_DIR": str(tmp_path / "data")})
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(pg_url) as gate:
            gate.execute("CREATE TABLE alembic_version (version_num varchar(32) NOT NULL)")
            processes = [
                subprocess.Popen(
                    [sys.executable, "-m", "filejobs.cli", "migrate"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                for _ in range(MIGRATORS)
            ]

            # A session's view of pg_stat_activity is fixed for its transaction: look from another.
            with psycopg.connect(pg_url, autocommit=True) as observer:

                def all_waiting() -> bool:
                    exited = [p.returncode for p in processes if p.poll() is not None]
                    assert not exited, f"a migrator exited before the gate opened: {exited}"
                    return waiting_sessions(observer) >= MIGRATORS

                wait_until(all_waiting, timeout=TIMEOUT, what=f"{MIGRATORS} migrators to wait at the gate")
            gate.rollback()
        outputs = [process.communicate(timeout=TIMEOUT)[0].decode(errors="replace") for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "database is up to date" in output

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            versions = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
            tables = set(
                conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                ).scalars()
            )
    finally:
        db.dispose()
    assert versions == [head]
    assert "jobs" in tables


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="local-backend"),
        pytest.param({"FILEJOBS_BACKEND": "celery"}, id="celery-without-broker"),
    ],
)
def test_worker_refuses_local_backend(tmp_path: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "filejobs.cli", "worker", "--concurrency", "1"],
        cwd=tmp_path,
        env=base_env({"FILEJOBS_DATA_DIR": str(tmp_path / "data"), **env}),
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, (done.returncode, stderr)
    assert "FILEJOBS_BACKEND=celery" in stderr
    assert "FILEJOBS_BROKER_URL" in stderr
    assert "Traceback" not in stderr
