"""The API models of ``/v1/webhooks``: what callers send and see (never a secret but once)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from filejobs.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from filejobs.webhooks import signing

EventType = Literal["job.succeeded", "job.failed", "job.cancelled"]
ALL_EVENTS: list[EventType] = ["job.succeeded", "job.failed", "job.cancelled"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="An https:// URL that resolves to public addresses.")
    events: list[EventType] = Field(
        default_factory=lambda: list(ALL_EVENTS), min_length=1, description="The events to send."
    )
    description: str = Field(default="", max_length=500)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    events: list[EventType] | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(default=None, description="true: turn a disabled webhook on again.")


class WebhookPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"title": "Webhook"})

    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    #: The secret, masked (``whsec_abcd…``): it is shown whole only when made.
    secret: str
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookPublic):
    """A new webhook, or one whose secret was just rotated: the only answer with ``secret`` whole."""

    model_config = ConfigDict(json_schema_extra={"title": "WebhookWithSecret"})

    previous_secret_expires_at: datetime | None = None


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"title": "WebhookDelivery"})

    id: str = Field(description="The webhook-id header every attempt sends.")
    event_type: str
    job_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class DeliveryList(BaseModel):
    items: list[DeliveryPublic]
    next_cursor: str | None


class SigningSecret(BaseModel):
    """The key's default secret, which signs the deliveries to its jobs' ``callback_url``."""

    secret: str
    previous_secret_expires_at: datetime | None


def webhook_public(endpoint: WebhookEndpoint) -> WebhookPublic:
    return WebhookPublic(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoint.events,
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since,
        secret=signing.mask(endpoint.secret),
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def webhook_with_secret(endpoint: WebhookEndpoint) -> WebhookWithSecret:
    public = webhook_public(endpoint).model_dump()
    public["secret"] = endpoint.secret
    return WebhookWithSecret(**public, previous_secret_expires_at=endpoint.previous_secret_until)


def delivery_public(delivery: WebhookDelivery) -> DeliveryPublic:
    pending = delivery.status == DeliveryStatus.pending.value
    return DeliveryPublic(
        id=delivery.id,
        event_type=delivery.event_type,
        job_id=delivery.job_id,
        status=DeliveryStatus(delivery.status),
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if pending else None,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
    )
