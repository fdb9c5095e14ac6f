"""FastAPI dependencies, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from service.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hop on every request
    return cast(Services, request.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]
