"""``/v1/uploads``: resumable uploads (tus 1.0.0, https://tus.io); a completed one becomes a job.

Thin: each route calls one function of :mod:`filejobs.tus.handlers` and shapes the tus answer.
``Tus-Resumable`` on every answer and the 412 for another protocol version (after the key's 401)
come from :mod:`filejobs.api.tus_headers`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from filejobs.api.auth import CallerDep, check_still_allowed
from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.api.tus_headers import TusVersionDep
from filejobs.errors import ClientGone, Problem
from filejobs.jobs import commands
from filejobs.keys import Caller
from filejobs.services import Services
from filejobs.tus import handlers, protocol
from filejobs.tus.handlers import Patched

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

CHUNK_BODY: dict[str, Any] = {
    "content": {protocol.CHUNK_TYPE: {"schema": {"type": "string", "format": "binary"}}},
}


def _header(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema, "description": description}


TUS_RESUMABLE = _header(
    "Tus-Resumable",
    {"type": "string", "enum": [protocol.VERSION]},
    "The tus version: 1.0.0 (anything else, or none: 412 with Tus-Version).",
    required=True,
)
#: Its maximum is made MAX_UPLOAD_BYTES when the schema is built (see filejobs.app).
UPLOAD_LENGTH = _header(
    "Upload-Length",
    {"type": "integer", "minimum": 1},
    "The upload's size in bytes; or send Upload-Defer-Length: 1 instead (one of the two is needed).",
)
CREATION: dict[str, Any] = {
    "parameters": [
        TUS_RESUMABLE,
        UPLOAD_LENGTH,
        _header(
            "Upload-Defer-Length",
            {"type": "string", "enum": ["1"]},
            "1: the size is sent with a later PATCH (Upload-Length), instead of Upload-Length now.",
        ),
    ],
    "requestBody": CHUNK_BODY,
}
APPEND: dict[str, Any] = {
    "parameters": [
        TUS_RESUMABLE,
        _header(
            "Upload-Offset",
            {"type": "integer", "minimum": 0},
            "The offset the chunk starts at: the upload's (409 otherwise).",
            required=True,
        ),
    ],
    "requestBody": {**CHUNK_BODY, "required": True},
}
VERSIONED: dict[str, Any] = {"parameters": [TUS_RESUMABLE]}


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


# Discovery without a key (as tusd and browsers' preflights expect): left out of the OpenAPI
# document, whose /v1 operations all need the key.
@router.options("", status_code=204, summary="What this tus server supports", include_in_schema=False)
async def options(services: ServicesDep) -> Response:
    return Response(status_code=204, headers=_capabilities(services))


class UploadCreated(BaseModel):
    """The new upload (tus clients read ``Location``; this body is for everyone else)."""

    id: str
    url: str


@router.post(
    "",
    status_code=201,
    response_model=UploadCreated,
    summary="Create a resumable upload (tus creation; creation-with-upload, creation-defer-length)",
    openapi_extra=CREATION,
    responses={
        201: {"description": "Created: `Location` is the upload's URL; `Upload-Offset` with a body."},
        **problem_docs(400, 401, 408, 412, 413, 415, 422, 429, 460, 503, 507),
    },
)
async def create_upload(
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    _version: TusVersionDep,
    background: BackgroundTasks,
) -> Response:
    """Headers: `Upload-Length` (or `Upload-Defer-Length: 1`), and `Upload-Metadata`: comma-separated
    `key base64(value)` pairs, the keys `filename`, `filetype`, `processor`, `params` (a JSON object)
    and `idempotency-key` (processor, params and a declared type are checked now: 422, 415). With a
    body of type `application/offset+octet-stream`, its bytes are the upload's first."""
    info = await handlers.create(services=services, owner=caller.scope, headers=request.headers)
    location = f"/v1/uploads/{info.id}"
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    created = UploadCreated(id=info.id, url=location).model_dump_json()
    if not has_body or not (request.headers.get("content-type") or "").startswith(protocol.CHUNK_TYPE):
        headers = {"Location": location, **handlers.upload_headers(info)}
        return Response(created, status_code=201, headers=headers, media_type="application/json")
    try:
        patched = await _append(request, services, caller, info.id, creating=True)
    except (Problem, ClientGone) as exc:
        # The client never learnt the upload's URL: it cannot resume it, so it goes now (a
        # retry of the creation starts afresh) instead of holding a slot until it expires.
        with contextlib.suppress(Problem):
            await handlers.terminate(services=services, owner=caller.scope, upload_id=info.id)
        if isinstance(exc, ClientGone):
            return Response(status_code=400)
        raise
    _dispatch_new(services, background, patched)
    headers = {"Location": location, **handlers.upload_headers(patched.info)}
    return Response(created, status_code=201, headers=headers, media_type="application/json")


@router.head(
    "/{upload_id}",
    response_class=Response,
    summary="An upload's offset (and, once complete, its job: Filejobs-Job)",
    openapi_extra=VERSIONED,
    responses={
        200: {"description": "`Upload-Offset`, `Upload-Length`, `Upload-Metadata`, `Upload-Expires`."},
        **problem_docs(401, 404, 410, 412, 422, 423, 429),
    },
)
async def head_upload(
    upload_id: str, services: ServicesDep, caller: CallerDep, _version: TusVersionDep
) -> Response:
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
    response_class=Response,
    summary="Append bytes at Upload-Offset (the last ones make the job: Filejobs-Job)",
    openapi_extra=APPEND,
    responses={
        204: {"description": "Stored (fsynced): `Upload-Offset` is the new offset."},
        **problem_docs(400, 401, 404, 408, 409, 410, 412, 413, 415, 422, 423, 429, 460, 503, 507),
    },
)
async def patch_upload(
    upload_id: str,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    _version: TusVersionDep,
    background: BackgroundTasks,
) -> Response:
    """`Upload-Checksum: <sha1|sha256|md5> <base64 digest>` (optional): the chunk is kept only if it
    matches (460 otherwise, nothing kept). For a deferred length, `Upload-Length` with any PATCH."""
    try:
        patched = await _append(request, services, caller, upload_id)
    except ClientGone:
        return Response(status_code=400)  # nobody listens; what arrived is kept (no checksum)
    _dispatch_new(services, background, patched)
    return Response(status_code=204, headers=handlers.upload_headers(patched.info))


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    summary="Terminate an upload (its bytes are removed at once)",
    openapi_extra=VERSIONED,
    responses=problem_docs(401, 404, 412, 422, 423, 429),
)
async def delete_upload(
    upload_id: str, services: ServicesDep, caller: CallerDep, _version: TusVersionDep
) -> Response:
    await handlers.terminate(services=services, owner=caller.scope, upload_id=upload_id)
    return Response(status_code=204)
