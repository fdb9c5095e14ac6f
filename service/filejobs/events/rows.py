"""The queries behind the event streams. Rows come back as plain attribute views (like
``repository.list_jobs``): they are only rendered, never written."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from filejobs.db import Database
from filejobs.models import Job

_T: Any = Job.__table__  # type: ignore[attr-defined]

#: Most ids asked for in one ``IN (...)``.
CHUNK = 500


def views_by_id(db: Database, ids: Collection[str]) -> dict[str, SimpleNamespace]:
    """The current rows of ``ids`` that still exist."""
    found: dict[str, SimpleNamespace] = {}
    ordered = sorted(ids)
    with db.read_connection() as conn:
        for start in range(0, len(ordered), CHUNK):
            query = select(_T).where(_T.c.id.in_(ordered[start : start + CHUNK]))
            for row in conn.execute(query).mappings():
                found[row["id"]] = SimpleNamespace(**row)
    return found


def versions_changed_since(db: Database, since: datetime) -> list[tuple[str, int, datetime]]:
    """``(id, version, updated_at)`` of every row changed after ``since`` (an index-only scan)."""
    query = select(_T.c.id, _T.c.version, _T.c.updated_at).where(_T.c.updated_at > since)
    with db.read_connection() as conn:
        return [(row[0], row[1], row[2]) for row in conn.execute(query)]


def owner_changed_since(db: Database, owner: str, since: datetime, limit: int) -> list[SimpleNamespace]:
    """Up to ``limit`` + 1 of ``owner``'s rows changed after ``since``, oldest change first (one
    more than asked tells the caller there were too many)."""
    # ``owner || ''``: not a column an index can serve, so the planner walks ix_jobs_updated_at
    # from ``since`` (SQLite, without statistics, would take an owner index and sort all of the
    # owner's jobs).
    query = (
        select(_T)
        .where(_T.c.owner.concat("") == owner, _T.c.updated_at > since)
        .order_by(_T.c.updated_at, _T.c.id)
        .limit(limit + 1)
    )
    with db.read_connection() as conn:
        return [SimpleNamespace(**row) for row in conn.execute(query).mappings()]
