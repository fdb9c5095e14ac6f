"""``/v1/webhooks``: a key's signed webhook endpoints, their deliveries, and its default secret."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response

from filejobs.api.auth import CallerDep
from filejobs.api.deps import ServicesDep
from filejobs.api.json_body import json_body, json_body_docs
from filejobs.api.problems import problem_docs
from filejobs.models import DeliveryStatus
from filejobs.services import Services
from filejobs.webhooks import endpoints, history
from filejobs.webhooks.schemas import (
    DeliveryList,
    DeliveryPublic,
    SigningSecret,
    WebhookCreate,
    WebhookList,
    WebhookPublic,
    WebhookUpdate,
    WebhookWithSecret,
    delivery_public,
    webhook_public,
    webhook_with_secret,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
#: The key's default secret lives beside /v1/webhooks, not under it (where it would share a path
#: shape with /v1/webhooks/{webhook_id}).
secret_router = APIRouter()

#: DNS of a URL's host may take this long before the URL counts as unresolvable.
RESOLVE_TIMEOUT = 10.0


def _policy(services: Services) -> endpoints.UrlPolicy:
    settings = services.settings
    return endpoints.UrlPolicy(
        allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
    )


def _json(
    model: WebhookPublic | WebhookList | DeliveryList | DeliveryPublic | SigningSecret,
    status: int = 200,
    **headers: str,
) -> Response:
    return Response(
        model.model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    summary="Register a webhook endpoint (its signing secret is shown once)",
    responses=problem_docs(400, 401, 409, 413, 422, 429),
    openapi_extra=json_body_docs(WebhookCreate),
)
async def create_webhook(request: Request, services: ServicesDep, caller: CallerDep) -> Response:
    """409 past WEBHOOK_MAX_ENDPOINTS; 422 for a URL that is not https, does not resolve or resolves
    to a private, loopback, link-local, multicast or metadata address."""
    body = await json_body(request, WebhookCreate)
    endpoint = await to_thread.run_sync(
        partial(
            endpoints.create_endpoint,
            db=services.db,
            owner=caller.scope,
            url=body.url,
            events=list(body.events),
            description=body.description,
            policy=_policy(services),
            max_endpoints=services.settings.webhook_max_endpoints,
        ),
        abandon_on_cancel=True,
    )
    services.webhooks.wake()
    return _json(webhook_with_secret(endpoint), 201, Location=f"/v1/webhooks/{endpoint.id}")


@router.get(
    "", response_model=WebhookList, summary="List the key's webhooks", responses=problem_docs(401, 422, 429)
)
async def list_webhooks(services: ServicesDep, caller: CallerDep) -> Response:
    found = await to_thread.run_sync(partial(endpoints.list_endpoints, services.db, owner=caller.scope))
    return _json(WebhookList(items=[webhook_public(endpoint) for endpoint in found]))


@secret_router.post(
    "/v1/callback-secret",
    tags=["webhooks"],
    response_model=SigningSecret,
    summary="Make or rotate the key's default secret (signs jobs' callback_url deliveries)",
    responses=problem_docs(401, 422, 429),
)
async def rotate_default_secret(services: ServicesDep, caller: CallerDep) -> Response:
    """Shown once; after a rotation the previous one signs too until ``previous_secret_expires_at``."""
    row, until = await to_thread.run_sync(
        partial(
            endpoints.rotate_default_secret,
            db=services.db,
            owner=caller.scope,
            grace=services.settings.webhook_secret_grace,
        )
    )
    services.webhooks.wake()
    return _json(SigningSecret(secret=row.secret, previous_secret_expires_at=until))


@router.get(
    "/{webhook_id}",
    response_model=WebhookPublic,
    summary="One webhook",
    responses=problem_docs(401, 404, 422, 429),
)
async def get_webhook(webhook_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    endpoint = await to_thread.run_sync(
        partial(endpoints.get_endpoint, services.db, webhook_id, owner=caller.scope)
    )
    return _json(webhook_public(endpoint))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookPublic,
    summary="Change a webhook's URL, events or description, or enable it again",
    responses=problem_docs(400, 401, 404, 413, 422, 429),
    openapi_extra=json_body_docs(WebhookUpdate),
)
async def update_webhook(
    webhook_id: str, request: Request, services: ServicesDep, caller: CallerDep
) -> Response:
    body = await json_body(request, WebhookUpdate)
    endpoint = await to_thread.run_sync(
        partial(
            endpoints.update_endpoint,
            db=services.db,
            endpoint_id=webhook_id,
            owner=caller.scope,
            policy=_policy(services),
            url=body.url,
            events=list(body.events) if body.events is not None else None,
            description=body.description,
            enabled=body.enabled,
        ),
        abandon_on_cancel=True,
    )
    services.webhooks.wake()
    return _json(webhook_public(endpoint))


@router.delete(
    "/{webhook_id}",
    status_code=204,
    summary="Remove a webhook and its deliveries",
    responses=problem_docs(401, 404, 422, 429),
)
async def delete_webhook(webhook_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    await to_thread.run_sync(
        partial(endpoints.delete_endpoint, db=services.db, endpoint_id=webhook_id, owner=caller.scope)
    )
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    summary="Give a webhook a new secret (the old one signs too for WEBHOOK_SECRET_GRACE)",
    responses=problem_docs(401, 404, 422, 429),
)
async def rotate_secret(webhook_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    endpoint = await to_thread.run_sync(
        partial(
            endpoints.rotate_secret,
            db=services.db,
            endpoint_id=webhook_id,
            owner=caller.scope,
            grace=services.settings.webhook_secret_grace,
        )
    )
    return _json(webhook_with_secret(endpoint))


@router.post(
    "/{webhook_id}/test",
    status_code=202,
    response_model=DeliveryPublic,
    summary="Send a webhook.test event",
    responses=problem_docs(401, 404, 409, 422, 429),
)
async def send_test(webhook_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    delivery = await to_thread.run_sync(
        partial(
            endpoints.send_test,
            db=services.db,
            endpoint_id=webhook_id,
            owner=caller.scope,
            max_pending=services.settings.webhook_max_pending,
        )
    )
    services.webhooks.wake()
    return _json(delivery_public(delivery), 202)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    summary="A webhook's deliveries, newest first",
    responses=problem_docs(401, 404, 422, 429),
)
async def list_deliveries(
    webhook_id: str,
    services: ServicesDep,
    caller: CallerDep,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    items, next_cursor = await to_thread.run_sync(
        partial(
            history.list_deliveries,
            services.db,
            endpoint_id=webhook_id,
            owner=caller.scope,
            status=status,
            limit=limit,
            cursor=cursor or None,
        )
    )
    return _json(DeliveryList(items=[delivery_public(item) for item in items], next_cursor=next_cursor))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryPublic,
    summary="Send a delivery again now",
    responses=problem_docs(401, 404, 409, 422, 429),
)
async def retry_delivery(
    webhook_id: str, delivery_id: str, services: ServicesDep, caller: CallerDep
) -> Response:
    delivery = await to_thread.run_sync(
        partial(
            history.retry_delivery,
            services.db,
            endpoint_id=webhook_id,
            delivery_id=delivery_id,
            owner=caller.scope,
        )
    )
    services.webhooks.wake()
    if delivery.job_id:
        services.hub.notify(delivery.job_id)
    return _json(delivery_public(delivery), 202)
