"""Every change to a key's webhook endpoints and its default secret (per-key: another key's
endpoint is a 404, as an unknown one is).

The functions block (database, and DNS for a URL's check): routes call them in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from filejobs.db import Database
from filejobs.errors import Conflict, NotFound, Unprocessable
from filejobs.ids import is_job_id, new_job_id
from filejobs.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookSecret, utcnow
from filejobs.webhooks import address, outbox, signing

ENDPOINT_PREFIX = "ep_"


@dataclass(frozen=True)
class UrlPolicy:
    """What the URL check allows (``WEBHOOK_ALLOW_HTTP``, ``WEBHOOK_ALLOW_PRIVATE``)."""

    allow_http: bool = False
    allow_private: bool = False


def check_url(url: str, policy: UrlPolicy) -> str:
    """``url`` if the service may call it, else 422 saying why (resolves the host: blocking)."""
    try:
        address.resolve(url, allow_http=policy.allow_http, allow_private=policy.allow_private)
    except address.RefusedURL as exc:
        raise Unprocessable(f"'url' refused: {exc}") from None
    return url


def is_endpoint_id(value: str) -> bool:
    return value.startswith(ENDPOINT_PREFIX) and is_job_id(value.removeprefix(ENDPOINT_PREFIX))


def get_endpoint(db: Database, endpoint_id: str, *, owner: str) -> WebhookEndpoint:
    """The endpoint of ``owner``, or 404."""
    endpoint = None
    if is_endpoint_id(endpoint_id):
        with db.read() as session:
            endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.owner != owner:
        raise NotFound(f"No webhook with id {endpoint_id!r}.")
    return endpoint


def list_endpoints(db: Database, *, owner: str) -> list[WebhookEndpoint]:
    query = (
        select(WebhookEndpoint).where(col(WebhookEndpoint.owner) == owner).order_by(col(WebhookEndpoint.id))
    )
    with db.read() as session:
        return list(session.exec(query).all())


def create_endpoint(
    *,
    db: Database,
    owner: str,
    url: str,
    events: list[str],
    description: str,
    policy: UrlPolicy,
    max_endpoints: int,
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret; 422 for a refused URL, 409 past ``max_endpoints``."""
    check_url(url, policy)
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=ENDPOINT_PREFIX + new_job_id(),
        owner=owner,
        url=url,
        events=list(dict.fromkeys(events)),
        description=description,
        secret=signing.new_secret(),
        created_at=now,
        updated_at=now,
    )
    with db.write() as session:
        count = session.exec(
            select(func.count()).select_from(WebhookEndpoint).where(col(WebhookEndpoint.owner) == owner)
        ).one()
        if count >= max_endpoints:
            raise Conflict(
                f"This key has {count} webhooks, the most it may have (WEBHOOK_MAX_ENDPOINTS); "
                "remove one first."
            )
        session.add(endpoint)
    return endpoint


def update_endpoint(
    *,
    db: Database,
    endpoint_id: str,
    owner: str,
    policy: UrlPolicy,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given; ``enabled=True`` turns a disabled endpoint on again (its failing
    time starts afresh)."""
    get_endpoint(db, endpoint_id, owner=owner)
    if url is not None:
        check_url(url, policy)
    with db.write() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None or endpoint.owner != owner:
            raise NotFound(f"No webhook with id {endpoint_id!r}.")
        if url is not None:
            endpoint.url = url
        if events is not None:
            endpoint.events = list(dict.fromkeys(events))
        if description is not None:
            endpoint.description = description
        if enabled is True and not endpoint.enabled:
            endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since = True, None, None
        elif enabled is False and endpoint.enabled:
            disable(session, endpoint, "disabled by its owner")
        endpoint.updated_at = utcnow()
        session.add(endpoint)
    return endpoint


def disable(session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    """Turn ``endpoint`` off (in ``session``'s transaction); its undelivered events fail with the reason."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:500]
    session.add(endpoint)
    session.exec(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint.id,
            col(WebhookDelivery.status) == DeliveryStatus.pending.value,
        )
        .values(
            status=DeliveryStatus.failed.value,
            last_error=f"endpoint disabled: {reason}"[:500],
            finished_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def delete_endpoint(*, db: Database, endpoint_id: str, owner: str) -> None:
    """Remove the endpoint and its deliveries (undelivered ones are never sent)."""
    get_endpoint(db, endpoint_id, owner=owner)
    with db.write() as session:
        session.exec(
            delete(WebhookDelivery)
            .where(col(WebhookDelivery.endpoint_id) == endpoint_id)
            .execution_options(synchronize_session=False)
        )
        session.exec(
            delete(WebhookEndpoint)
            .where(col(WebhookEndpoint.id) == endpoint_id, col(WebhookEndpoint.owner) == owner)
            .execution_options(synchronize_session=False)
        )


def rotate_secret(*, db: Database, endpoint_id: str, owner: str, grace: float) -> WebhookEndpoint:
    """A new secret; the old one signs too for ``grace`` seconds."""
    get_endpoint(db, endpoint_id, owner=owner)
    now = utcnow()
    with db.write() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None:
            raise NotFound(f"No webhook with id {endpoint_id!r}.")
        endpoint.previous_secret = endpoint.secret if grace > 0 else None
        endpoint.previous_secret_until = now + timedelta(seconds=grace) if grace > 0 else None
        endpoint.secret = signing.new_secret()
        endpoint.updated_at = now
        session.add(endpoint)
    return endpoint


def send_test(*, db: Database, endpoint_id: str, owner: str, max_pending: int) -> WebhookDelivery:
    """Queue a ``webhook.test`` event to the endpoint (409 while it is disabled)."""
    with db.write() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id) if is_endpoint_id(endpoint_id) else None
        if endpoint is None or endpoint.owner != owner:
            raise NotFound(f"No webhook with id {endpoint_id!r}.")
        if not endpoint.enabled:
            raise Conflict(f"The webhook is disabled ({endpoint.disabled_reason}); enable it first.")
        return outbox.record_test_event(session, endpoint, max_pending=max_pending)


def default_secret(db: Database, *, owner: str) -> WebhookSecret | None:
    with db.read() as session:
        return session.get(WebhookSecret, owner)


def rotate_default_secret(*, db: Database, owner: str, grace: float) -> tuple[WebhookSecret, datetime | None]:
    """Make (or replace) the key's default secret, which signs its jobs' one-off ``callback_url``
    deliveries; the old one signs too for ``grace`` seconds."""
    now = utcnow()
    with db.write() as session:
        row = session.get(WebhookSecret, owner, with_for_update=True)
        if row is None:
            row = WebhookSecret(owner=owner, secret=signing.new_secret(), created_at=now)
        else:
            row.previous_secret = row.secret if grace > 0 else None
            row.previous_secret_until = now + timedelta(seconds=grace) if grace > 0 else None
            row.secret = signing.new_secret()
        session.add(row)
    return row, row.previous_secret_until
