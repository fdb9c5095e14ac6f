"""FastAPI dependencies, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request
from starlette.types import Scope

from filejobs.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hop on every request
    return cast(Services, request.state.services)


def scope_services(scope: Scope) -> Services | None:
    """The services of the app serving ``scope`` (set by the lifespan), for ASGI middleware."""
    state: dict[str, Any] = scope.get("state") or {}
    return state.get("services")


ServicesDep = Annotated[Services, Depends(get_services)]
