"""``/v1/jobs``: submit, look at, wait on, list, download, cancel, retry, delete."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, BackgroundTasks, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import ClientDisconnect

from filejobs import metrics
from filejobs.api.auth import CallerDep, check_still_allowed
from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.errors import ClientGone, Conflict, NotFound
from filejobs.jobs import idempotency, repository
from filejobs.jobs.liveness import owner_is_dead_here
from filejobs.jobs.submit import IdempotencyPlan, create_job
from filejobs.keys import Caller
from filejobs.models import Job, JobList, JobPublic, JobStatus, etag_of, job_public
from filejobs.services import Services

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_WAIT = 30.0
#: How often a long-poll re-reads the row, to see changes made by other processes.
WAIT_POLL = 0.5
RETRY_AFTER = "1"
#: Seconds an upload holds its Idempotency-Key without renewing (it renews every third of it).
IDEMPOTENCY_LEASE = 60.0
#: Who holds an Idempotency-Key: this process (a restarted node takes a dead one's keys at once).
HOLDER = f"{socket.gethostname()}:{os.getpid()}:api"

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "minLength": 1,
                            "description": "The file to process (not empty).",
                        },
                        "processor": {
                            "type": "string",
                            "default": "inspect",
                            "description": "A name from GET /v1/processors (the enum lists this server's "
                            "processors); empty or absent: inspect.",
                        },
                        "params": {
                            "type": "object",
                            "default": {},
                            "description": "The processor's params, a JSON object valid for the params JSON "
                            "schema GET /v1/processors gives for the chosen processor; params that are not "
                            "(an unknown name, a wrong type or value) answer 422, naming what is wrong.",
                        },
                    },
                },
                "encoding": {"params": {"contentType": "application/json"}},
            }
        },
    }
}


def job_response(job: Job, status_code: int = 200, **headers: str) -> Response:
    # pydantic's own JSON encoder: no dict of Python objects, no json.dumps
    return Response(
        job_public(job).model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": etag_of(job), **headers},
    )


async def _body(services: Services, request: Request, caller: Caller) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise ClientGone() from None
    await check_still_allowed(services, caller)  # a key revoked while the body came: no job


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    summary="Upload a file and queue a job",
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {
            "description": "The same request was made before with this `Idempotency-Key`: its job "
            "(header `Idempotent-Replayed: true`).",
            "model": JobPublic,
        },
        202: {"description": "Accepted: the job is queued. `Location` names it."},
        **problem_docs(400, 401, 408, 409, 413, 415, 422, 429, 503, 507),
    },
)
async def submit_job(
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    background: BackgroundTasks,
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Makes a repeated submit return the first one's job (kept IDEMPOTENCY_TTL, 24 h).",
            json_schema_extra={
                "minLength": 1,
                "maxLength": 255,
                "pattern": f"^{idempotency.KEY_PATTERN.pattern}$",
            },
        ),
    ] = None,
) -> Response:
    """Stream the multipart body to disk, record a queued job, answer 202, then dispatch it.

    Before any byte is stored: 507 when the disk is short, 503 when the queue is too deep, 429
    when the key has too many unfinished jobs, 409 while a request with the same Idempotency-Key
    is still uploading."""
    response, new_job_id = await submit(services, request, caller, idempotency_key)
    if new_job_id is not None:
        background.add_task(dispatch, services, new_job_id)
    return response


async def submit(
    services: Services, request: Request, caller: Caller, idempotency_key: str | None
) -> tuple[Response, str | None]:
    """``POST /v1/jobs`` (the route's body, shared with :mod:`filejobs.api.fast_upload`): the
    answer, and the id of the new job to :func:`dispatch` after it (None: no new job)."""
    length = _content_length(request)
    if length is not None and length > services.settings.max_upload_bytes:
        length = None  # the receiver refuses it (413) before reading a byte
    if not services.admission.check_disk_cached(length):
        await to_thread.run_sync(services.admission.check_disk, length)
    plan = None
    if idempotency_key is not None:
        state = await to_thread.run_sync(_begin, services, caller, idempotency.parse_key(idempotency_key))
        plan = IdempotencyPlan(
            claim=state if isinstance(state, idempotency.Claim) else None,
            existing=state if isinstance(state, idempotency.Existing) else None,
        )
    claim = plan.claim if plan is not None else None
    renewer = asyncio.create_task(_renew_claim(services, claim)) if claim is not None else None
    try:
        if (plan is None or plan.existing is None) and not services.admission.check_new_job_cached(
            caller.scope
        ):
            await to_thread.run_sync(services.admission.check_new_job, caller.scope)
        with metrics.track_upload() as upload:
            job = await create_job(
                db=services.db,
                storage=services.storage,
                registry=services.registry,
                settings=services.settings,
                headers=request.headers,
                body=_body(services, request, caller),
                owner=caller.scope,
                idempotency=plan,
                committer=services.committer,
                shutdown=services.shutdown,
            )
            upload.accepted(job.file_size)
    except idempotency.Replay as replay:
        existing = plan.existing if plan is not None else None
        assert existing is not None
        return await _replayed(services, caller, existing, replay.job_id), None
    except ClientGone:
        await _release(services, claim)
        return Response(status_code=400), None  # nobody is listening; the upload left nothing behind
    except BaseException:
        await _release(services, claim)
        raise
    finally:
        if renewer is not None:
            renewer.cancel()
    headers = {"Location": f"/v1/jobs/{job.id}", "Retry-After": RETRY_AFTER}
    return job_response(job, 202, **headers), job.id


async def dispatch(services: Services, job_id: str) -> None:
    """After the response: tell the event streams of the new job, and hand it to the dispatcher (a
    broker publish waits in a thread; the local pool's queue takes it at once)."""
    services.hub.notify(job_id)
    if services.dispatcher.durable:
        await to_thread.run_sync(services.dispatcher.submit, job_id)
    else:
        services.dispatcher.submit(job_id)


def _begin(services: Services, caller: Caller, key: str) -> idempotency.Claim | idempotency.Existing:
    """Claim the key, or find what it made; a key whose job has been deleted is free again."""
    begin = partial(
        idempotency.begin,
        services.db,
        scope=caller.scope,
        key=key,
        token=secrets.token_hex(16),
        holder=HOLDER,
        ttl=services.settings.idempotency_ttl,
        lease_seconds=IDEMPOTENCY_LEASE,
        holder_is_dead=owner_is_dead_here,
    )
    state = begin()
    if isinstance(state, idempotency.Existing) and not repository.get_job(
        services.db, state.job_id, owner=caller.scope
    ):
        idempotency.forget(services.db, state)
        state = begin()
    return state


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None  # junk: the receiver's 400


async def _renew_claim(services: Services, claim: idempotency.Claim) -> None:
    """Keep this upload's hold on its Idempotency-Key while the body streams in."""
    while True:
        await asyncio.sleep(IDEMPOTENCY_LEASE / 3)
        with contextlib.suppress(Exception):
            await to_thread.run_sync(
                partial(idempotency.renew, services.db, claim, lease_seconds=IDEMPOTENCY_LEASE)
            )


async def _release(services: Services, claim: idempotency.Claim | None) -> None:
    if claim is not None:
        with anyio.CancelScope(shield=True):
            await to_thread.run_sync(idempotency.release, services.db, claim)


async def _replayed(
    services: Services, caller: Caller, existing: idempotency.Existing, job_id: str
) -> Response:
    job = await services.reader.aget(job_id, owner=caller.scope)
    if job is None:
        await to_thread.run_sync(idempotency.forget, services.db, existing)
        raise Conflict(
            "The job made with this Idempotency-Key has been deleted; send the request again to make "
            "a new one."
        )
    return job_response(job, 200, Location=f"/v1/jobs/{job.id}", **{"Idempotent-Replayed": "true"})


@router.get(
    "",
    response_model=JobList,
    summary="List jobs, newest first",
    responses=problem_docs(400, 401, 422, 429),
)
async def list_jobs(
    services: ServicesDep,
    caller: CallerDep,
    status: JobStatus | None = None,
    processor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(description="`next_cursor` of the previous page; absent or empty: the first page."),
    ] = None,
) -> Response:
    jobs, next_cursor = await to_thread.run_sync(
        partial(
            repository.list_views,
            services.db,
            owner=caller.scope,
            status=status,
            processor=processor,
            limit=limit,
            cursor=cursor or None,
        )
    )
    page = JobList(items=[job_public(job) for job in jobs], next_cursor=next_cursor)
    return Response(page.model_dump_json(), media_type="application/json")  # validated already


async def _load(services: Services, caller: Caller, job_id: str) -> Job:
    """The caller's job, or 404 (another caller's job is as unknown as a missing one)."""
    job = await services.reader.aget(job_id, owner=caller.scope)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    return job


async def _wait_for_change(
    services: Services, caller: Caller, job: Job, baseline: str, seconds: float
) -> Job:
    """Return as soon as the job's ETag differs from ``baseline``, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    event = services.hub.subscribe(job.id)
    try:
        while etag_of(job) == baseline:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(WAIT_POLL, remaining))
            event.clear()
            job = await _load(services, caller, job.id)
    finally:
        services.hub.unsubscribe(job.id, event)
    return job


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="A job's status; long-polls with ?wait=",
    responses={
        304: {"description": "Not modified since the ETag in If-None-Match."},
        **problem_docs(401, 404, 422, 429),
    },
)
async def get_job(
    job_id: str,
    services: ServicesDep,
    caller: CallerDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for a change.")] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """With ``wait``, returns as soon as the job differs from ``If-None-Match`` (or from its state
    when the request arrived), or after ``wait`` seconds; at once for a finished job, which can no
    longer change by itself."""
    job = await _load(services, caller, job_id)
    if wait > 0 and not JobStatus(job.status).terminal:
        job = await _wait_for_change(services, caller, job, if_none_match or etag_of(job), wait)
    return conditional_job_response(job, if_none_match)


def conditional_job_response(job: Job, if_none_match: str | None) -> Response:
    """The job body, or ``304`` when ``If-None-Match`` names its current ETag."""
    etag = etag_of(job)
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    return job_response(job)


@router.get(
    "/{job_id}/result",
    summary="Download the result file, or the JSON result",
    responses={
        200: {
            "description": "The output file (with Content-Disposition) or the result JSON.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "*/*": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problem_docs(401, 404, 409, 422, 429),
    },
)
async def get_result(job_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    job = await _load(services, caller, job_id)
    if job.status != JobStatus.succeeded.value:
        raise Conflict(
            f"The job is {job.status}; its result exists once it has succeeded.", status_of_job=job.status
        )
    if job.output_key:
        path = services.storage.path(job.output_key)
        if not path.is_file():
            raise NotFound("The job's output file is no longer stored.")
        return FileResponse(
            path,
            filename=job.output_name,
            media_type=job.output_content_type,
            content_disposition_type="attachment",
        )
    return JSONResponse(job.result or {})


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a queued or running job",
    responses=problem_docs(401, 404, 409, 422, 429),
)
async def cancel_job(job_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    job = await to_thread.run_sync(partial(repository.cancel_job, services.db, job_id, owner=caller.scope))
    services.dispatcher.cancelled(job_id)
    services.hub.notify(job_id)
    return job_response(job)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=JobPublic,
    summary="Queue a failed or cancelled job again",
    responses=problem_docs(401, 404, 409, 422, 429, 503),
)
async def retry_job(
    job_id: str, services: ServicesDep, caller: CallerDep, background: BackgroundTasks
) -> Response:
    await _load(services, caller, job_id)  # 404 before 429/503 for a job that is not the caller's
    await to_thread.run_sync(services.admission.check_new_job, caller.scope)
    job = await to_thread.run_sync(
        partial(
            repository.retry_job,
            services.db,
            job_id,
            max_attempts=services.settings.max_attempts,
            owner=caller.scope,
        )
    )
    services.hub.notify(job_id)
    background.add_task(dispatch, services, job_id)
    return job_response(job, 202, Location=f"/v1/jobs/{job.id}", **{"Retry-After": RETRY_AFTER})


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a job and its files (cancelling it first if needed)",
    responses={204: {"description": "Deleted."}, **problem_docs(401, 404, 422, 429)},
)
async def delete_job(job_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    job = await to_thread.run_sync(partial(repository.delete_job, services.db, job_id, owner=caller.scope))
    services.dispatcher.cancelled(job_id)
    services.feed.deleted(job_id, job.owner)
    services.hub.notify(job_id)
    await to_thread.run_sync(services.storage.delete_job_files, job.id)
    return Response(status_code=204)
