"""The delivery queries on SQLite and PostgreSQL: claims are exclusive and bounded per lane, rows
with nowhere to go fail instead of coming back forever, retention."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from filejobs.db import Database
from filejobs.models import WebhookDelivery, utcnow
from filejobs.webhooks import deliveries, outbox
from tests.endpoints import add_endpoint
from tests.services import migrated_database

DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


def _deliveries(db: Database, endpoint_id: str | None, count: int, owner: str = "k1") -> list[str]:
    now = utcnow()
    rows = [
        {
            "id": outbox.new_delivery_id(),
            "owner": owner,
            "endpoint_id": endpoint_id,
            "url": None,
            "job_id": None,
            "event_type": "webhook.test",
            "payload": "{}",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now - timedelta(seconds=1),
            "created_at": now,
        }
        for _ in range(count)
    ]
    with db.write() as session:
        session.execute(insert(DELIVERIES), rows)
    return [row["id"] for row in rows]


def _claim(
    db: Database, capacity: dict[str, int] | None = None, limit: int = 100
) -> list[deliveries.Claimed]:
    return deliveries.claim_due(
        db, capacity=capacity or {}, default_capacity=4, limit=limit, lease_seconds=30
    )


def test_claims_are_exclusive(db: Database) -> None:
    endpoints = [add_endpoint(db) for _ in range(5)]
    wanted = {i for e in endpoints for i in _deliveries(db, e, 8)}
    got: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        for _ in range(20):
            found = _claim(db, limit=3)
            with lock:
                got.extend(c.id for c in found)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == len(set(got))  # never the same attempt twice
    assert set(got) == wanted  # and every row claimed (4 per endpoint per call, 40 rows)


def test_lanes_are_bounded_and_full_lanes_skipped(db: Database) -> None:
    slow, other = add_endpoint(db), add_endpoint(db)
    _deliveries(db, slow, 20)  # older: first in line
    other_ids = set(_deliveries(db, other, 3))
    first = _claim(db)
    assert sorted(c.lane for c in first).count(slow) == 4  # the default capacity per lane
    assert {c.id for c in first if c.lane == other} == other_ids
    # the slow lane full: its 16 due rows are not even looked at; nothing else is due
    assert _claim(db, capacity={slow: 0}) == []
    assert len(_claim(db, capacity={slow: 1})) == 1


def test_rows_with_nowhere_to_go_fail(db: Database) -> None:
    [gone] = _deliveries(db, "ep_no-such-endpoint", 1)
    [callback] = _deliveries(db, None, 1, owner="no-secret")  # a callback without a key secret
    assert _claim(db) == []
    with db.read() as session:
        rows = {r.id: r for r in session.execute(select(WebhookDelivery)).scalars()}
    for delivery_id in (gone, callback):
        assert rows[delivery_id].status == "failed"
        assert "gone or disabled" in (rows[delivery_id].last_error or "")
    assert _claim(db) == []


def test_pending_stats_and_retention(db: Database) -> None:
    endpoint = add_endpoint(db)
    ids = _deliveries(db, endpoint, 2)
    count, oldest = deliveries.pending_stats(db)
    assert count == 2
    assert oldest is not None
    assert oldest.tzinfo is not None
    [claimed, _] = _claim(db)
    deliveries.record_delivered(db, claimed, status_code=200)
    assert deliveries.pending_stats(db)[0] == 1
    assert deliveries.purge_finished(db, cutoff=utcnow() - timedelta(hours=1)) == 0
    assert deliveries.purge_finished(db, cutoff=utcnow() + timedelta(seconds=1)) == 1
    with db.read() as session:
        left = [r.id for r in session.execute(select(WebhookDelivery)).scalars()]
    assert left == [i for i in ids if i != claimed.id]
