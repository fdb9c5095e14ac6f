"""The ``change_listeners`` rows (PostgreSQL): which API processes listen to job changes now.

The jobs table's trigger sends ``NOTIFY filejobs_jobs`` only while a row here is current (migration
0009): a notifying commit holds a cluster-wide lock through its WAL flush, and most of the time no
process has an event stream open to read the notifications. A process that starts to listen:

1. ``LISTEN``s, then records its row (expiring after :data:`TTL` seconds, renewed every
   :data:`RENEW_EVERY` while it listens);
2. waits until every transaction in progress when its row committed has ended (at most
   :data:`SETTLE_MAX` seconds): a writer whose trigger looked before the row was there has
   committed (or rolled back) by then;
3. only then reads the rows changed meanwhile (the feed's scan), so no change falls between.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any

from sqlalchemy import text

from filejobs.db import Database

log = logging.getLogger(__name__)

#: Seconds a listener's row stays current without a renewal (a process killed mid-stream leaves
#: the trigger notifying for at most this long).
TTL = 30.0
RENEW_EVERY = 10.0
#: Seconds a new listener waits, at most, for the transactions in progress when it registered.
SETTLE_MAX = 2.0
SETTLE_POLL = 0.005

_REGISTER = """
INSERT INTO change_listeners (id, expires_at)
VALUES (%(id)s, clock_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
"""
_RENEW = """
UPDATE change_listeners SET expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)
WHERE id = %(id)s AND expires_at > clock_timestamp() RETURNING id
"""
_FORGET_EXPIRED = "DELETE FROM change_listeners WHERE expires_at < clock_timestamp()"
_SNAPSHOT = "SELECT pg_current_snapshot()::text"
_IN_PROGRESS = """
SELECT count(*) FROM pg_snapshot_xip(%(snapshot)s::pg_snapshot) AS x WHERE pg_xact_status(x) = 'in progress'
"""


def new_listener_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


async def register(conn: Any, listener_id: str) -> None:
    """Record ``listener_id`` on the autocommit psycopg ``conn`` (already LISTENing), then wait for the
    writers that may not have seen it (step 2 above)."""
    await conn.execute(_FORGET_EXPIRED)
    await conn.execute(_REGISTER, {"id": listener_id, "ttl": TTL})
    snapshot = (await (await conn.execute(_SNAPSHOT)).fetchone())[0]
    deadline = time.monotonic() + SETTLE_MAX
    while (await (await conn.execute(_IN_PROGRESS, {"snapshot": snapshot})).fetchone())[0]:
        if time.monotonic() >= deadline:
            log.warning("a transaction older than this listener is still open after %.0f s", SETTLE_MAX)
            return
        await asyncio.sleep(SETTLE_POLL)


async def renew(conn: Any, listener_id: str) -> bool:
    """Push the row's expiry on; False when it had expired (changes may have gone unannounced)."""
    return await (await conn.execute(_RENEW, {"id": listener_id, "ttl": TTL})).fetchone() is not None


def unregister(db: Database, listener_id: str) -> None:
    """The listener stopped: the trigger need not notify for it any more (best effort: it expires)."""
    try:
        with db.write() as session:
            session.execute(text("DELETE FROM change_listeners WHERE id = :id"), {"id": listener_id})
    except Exception as exc:
        log.debug("could not remove change listener %s (%s); it expires", listener_id, exc)
