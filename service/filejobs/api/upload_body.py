"""An upload's request body as :func:`filejobs.jobs.intake.submit_upload` takes it: bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from filejobs.api.auth import check_still_allowed
from filejobs.errors import ClientGone
from filejobs.keys import Caller
from filejobs.services import Services


async def upload_body(services: Services, request: Request, caller: Caller) -> AsyncIterator[bytes]:
    """The body's chunks; a client that disconnects is :class:`ClientGone` (the route's empty 400)
    and a key revoked while the body came is 401 (no job)."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise ClientGone() from None
    await check_still_allowed(services, caller)
