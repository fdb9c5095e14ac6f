"""``/healthz`` (the process answers) and ``/readyz`` (it can take uploads and run jobs)."""

from __future__ import annotations

import logging

from anyio import to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.errors import PROBLEM_JSON, ServiceUnavailable
from filejobs.services import Services

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _checks(services: Services) -> dict[str, str]:
    checks: dict[str, str] = {}
    for name, probe in (
        ("database", services.db.ping),
        ("storage", services.storage.check),
        (services.dispatcher.check_name, services.dispatcher.check),
    ):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %r", name, exc)
            checks[name] = f"failed: {type(exc).__name__}"
    return checks


@router.get(
    "/readyz",
    summary="Readiness: database, storage and the dispatcher (the broker on Celery)",
    responses=problem_docs(503),
)
async def readyz(services: ServicesDep) -> JSONResponse:
    checks = await to_thread.run_sync(_checks, services)
    if all(value == "ok" for value in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    body = {
        **ServiceUnavailable(
            "Not ready: " + ", ".join(k for k, v in checks.items() if v != "ok") + "."
        ).body(),
        "checks": checks,
    }
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": "5"})
