"""A webhook endpoint row made directly in a database, for tests of what a final status writes."""

from __future__ import annotations

from filejobs.db import Database
from filejobs.models import WebhookEndpoint, utcnow
from filejobs.webhooks import outbox


def add_endpoint(db: Database, owner: str = "k1", *, enabled: bool = True) -> str:
    """A webhook endpoint of ``owner`` for every event (each final status of its jobs queues one
    delivery while ``enabled``), at an address nothing listens on; returns its id."""
    now = utcnow()
    endpoint = WebhookEndpoint(
        id="ep_" + outbox.new_delivery_id().removeprefix("msg_"),
        owner=owner,
        url="http://127.0.0.1:9/hook",
        events=list(outbox.EVENT_TYPES),
        secret="whsec_" + "A" * 43 + "=",
        enabled=enabled,
        created_at=now,
        updated_at=now,
    )
    with db.write() as session:
        session.add(endpoint)
    return endpoint.id
