"""Whether a database is at the newest migration, without importing Alembic.

Alembic (with Mako) costs the API process about 9 MB of memory for good; at startup a database
already at :data:`HEAD` needs none of it. ``tests/test_migrations.py`` checks that :data:`HEAD` is
Alembic's head, so a new migration cannot be forgotten here.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from filejobs.db import Database

#: The newest revision under migrations/versions.
HEAD = "0010"


def at_head(db: Database) -> bool:
    """True when the database records :data:`HEAD` as its (only) revision."""
    try:
        with db.read_connection() as conn:
            versions = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    except SQLAlchemyError:  # no table yet: a new database
        return False
    return versions == [HEAD]
