"""A fresh PostgreSQL database on the machine's server (127.0.0.1:5432, user postgres, trust)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from filejobs.testing.services import require_port

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database, dropped (connections and all) on exit; yields its plain
    ``postgresql://`` URL. :class:`~filejobs.testing.Unavailable` when the server is unreachable."""
    require_port("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"filejobs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
