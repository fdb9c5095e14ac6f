"""What callers see of a webhook's deliveries and can do with them: list, retry."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from filejobs.db import Database
from filejobs.errors import Conflict, NotFound
from filejobs.ids import is_job_id
from filejobs.models import DeliveryStatus, WebhookDelivery, utcnow
from filejobs.webhooks.deliveries import DELIVERY_PREFIX, PENDING, settle_job
from filejobs.webhooks.endpoints import get_endpoint


def list_deliveries(
    db: Database,
    *,
    endpoint_id: str,
    owner: str,
    status: DeliveryStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[WebhookDelivery], str | None]:
    """The endpoint's deliveries, newest first; keyset-paginated on the time-ordered id."""
    get_endpoint(db, endpoint_id, owner=owner)
    query = select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    if status is not None:
        query = query.where(col(WebhookDelivery.status) == status.value)
    if cursor:
        query = query.where(col(WebhookDelivery.id) < cursor)
    query = query.order_by(col(WebhookDelivery.id).desc()).limit(limit + 1)
    with db.read() as session:
        rows = list(session.execute(query).scalars().all())
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def is_delivery_id(value: str) -> bool:
    return value.startswith(DELIVERY_PREFIX) and is_job_id(value.removeprefix(DELIVERY_PREFIX))


def retry_delivery(db: Database, *, endpoint_id: str, delivery_id: str, owner: str) -> WebhookDelivery:
    """Send a delivery again now (a delivered or failed one too; 409 while the endpoint is disabled)."""
    endpoint = get_endpoint(db, endpoint_id, owner=owner)
    if not endpoint.enabled:
        raise Conflict(f"The webhook is disabled ({endpoint.disabled_reason}); enable it first.")
    with db.write() as session:
        delivery = session.get(WebhookDelivery, delivery_id) if is_delivery_id(delivery_id) else None
        if delivery is None or delivery.endpoint_id != endpoint_id:
            raise NotFound(f"No delivery with id {delivery_id!r} for this webhook.")
        delivery.status = PENDING
        delivery.attempts = 0  # a fresh schedule of retries
        delivery.next_attempt_at = utcnow()
        delivery.finished_at = None
        session.add(delivery)
        session.flush()
        if delivery.job_id:
            settle_job(session, delivery.job_id)
    return delivery
