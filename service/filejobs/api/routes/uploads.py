"""``/v1/uploads``: resumable uploads (tus 1.0.0, https://tus.io); a completed one becomes a job.

Thin: each route calls one function of :mod:`filejobs.tus.handlers` and shapes the tus answer.
``Tus-Resumable`` on every answer and the 412 for another protocol version come from
:mod:`filejobs.api.tus_headers`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response
from starlette.requests import ClientDisconnect

from filejobs.api.auth import CallerDep, check_still_allowed
from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.errors import ClientGone
from filejobs.jobs import commands
from filejobs.keys import Caller
from filejobs.services import Services
from filejobs.tus import handlers, protocol
from filejobs.tus.handlers import Patched

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

CHUNK_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {protocol.CHUNK_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _capabilities(services: Services) -> dict[str, str]:
    return {
        "Tus-Version": protocol.VERSION,
        "Tus-Max-Size": str(services.settings.max_upload_bytes),
        "Tus-Extension": ",".join(protocol.EXTENSIONS),
        "Tus-Checksum-Algorithm": ",".join(protocol.CHECKSUMS),
    }


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise ClientGone() from None


def _dispatch_new(services: Services, background: BackgroundTasks, patched: Patched) -> None:
    """After the answer: hand the job this request made (if it made one) to the dispatcher."""
    submitted = patched.submitted
    if submitted is not None and not submitted.replayed:
        background.add_task(
            commands.dispatch, hub=services.hub, dispatcher=services.dispatcher, job_id=submitted.job.id
        )


async def _append(
    request: Request, services: Services, caller: Caller, upload_id: str, *, creating: bool = False
) -> Patched:
    return await handlers.append(
        services=services,
        owner=caller.scope,
        upload_id=upload_id,
        headers=request.headers,
        body=_body(request),
        before_complete=lambda: check_still_allowed(services, caller),
        creating=creating,
    )


@router.options("", status_code=204, summary="What this tus server supports", include_in_schema=True)
async def options(services: ServicesDep) -> Response:
    return Response(status_code=204, headers=_capabilities(services))


@router.post(
    "",
    status_code=201,
    summary="Create a resumable upload (tus creation; creation-with-upload, creation-defer-length)",
    openapi_extra=CHUNK_BODY,
    responses={
        201: {"description": "Created: `Location` is the upload's URL; `Upload-Offset` with a body."},
        **problem_docs(400, 401, 408, 412, 413, 415, 422, 429, 460, 503, 507),
    },
)
async def create_upload(
    request: Request, services: ServicesDep, caller: CallerDep, background: BackgroundTasks
) -> Response:
    """Headers: `Upload-Length` (or `Upload-Defer-Length: 1`), `Upload-Metadata` (`filename`,
    `filetype`, `processor`, `params`, `idempotency-key`). With a body of type
    `application/offset+octet-stream`, its bytes are the upload's first."""
    info = await handlers.create(services=services, owner=caller.scope, headers=request.headers)
    location = f"/v1/uploads/{info.id}"
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body or not (request.headers.get("content-type") or "").startswith(protocol.CHUNK_TYPE):
        return Response(status_code=201, headers={"Location": location, **handlers.upload_headers(info)})
    try:
        patched = await _append(request, services, caller, info.id, creating=True)
    except ClientGone:
        return Response(status_code=400)
    _dispatch_new(services, background, patched)
    return Response(status_code=201, headers={"Location": location, **handlers.upload_headers(patched.info)})


@router.head(
    "/{upload_id}",
    summary="An upload's offset (and, once complete, its job: Filejobs-Job)",
    responses={
        200: {"description": "`Upload-Offset`, `Upload-Length`, `Upload-Metadata`, `Upload-Expires`."},
        **problem_docs(401, 404, 410, 412),
    },
)
async def head_upload(upload_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    info = await handlers.status(services=services, owner=caller.scope, upload_id=upload_id)
    headers = {"Cache-Control": "no-store", **handlers.upload_headers(info)}
    if info.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(info.length)
    if info.metadata:
        headers["Upload-Metadata"] = protocol.encode_metadata(info.metadata)
    return Response(status_code=200, headers=headers)


@router.patch(
    "/{upload_id}",
    status_code=204,
    summary="Append bytes at Upload-Offset (the last ones make the job: Filejobs-Job)",
    openapi_extra=CHUNK_BODY,
    responses={
        204: {"description": "Stored (fsynced): `Upload-Offset` is the new offset."},
        **problem_docs(400, 401, 404, 408, 409, 410, 412, 413, 415, 422, 423, 460, 503, 507),
    },
)
async def patch_upload(
    upload_id: str, request: Request, services: ServicesDep, caller: CallerDep, background: BackgroundTasks
) -> Response:
    try:
        patched = await _append(request, services, caller, upload_id)
    except ClientGone:
        return Response(status_code=400)  # nobody listens; what arrived is kept (no checksum)
    _dispatch_new(services, background, patched)
    return Response(status_code=204, headers=handlers.upload_headers(patched.info))


@router.delete(
    "/{upload_id}",
    status_code=204,
    summary="Terminate an upload (its bytes are removed at once)",
    responses=problem_docs(401, 404, 412, 423),
)
async def delete_upload(upload_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    await handlers.terminate(services=services, owner=caller.scope, upload_id=upload_id)
    return Response(status_code=204)
