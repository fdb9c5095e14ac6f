"""``/v1/jobs``: submit, look at, wait on, list, download, cancel, retry, delete."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, BackgroundTasks, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import ClientDisconnect

from service import metrics
from service.api.deps import ServicesDep
from service.api.problems import problem_docs
from service.errors import ClientGone, Conflict, NotFound
from service.jobs import repository
from service.jobs.submit import create_job
from service.models import Job, JobList, JobPublic, JobStatus, etag_of, job_public
from service.services import Services

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_WAIT = 30.0
#: How often a long-poll re-reads the row, to see changes made by other processes.
WAIT_POLL = 0.5
RETRY_AFTER = "1"

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The file to process."},
                        "processor": {
                            "type": "string",
                            "default": "inspect",
                            "description": "A name from GET /v1/processors.",
                        },
                        "params": {
                            "type": "string",
                            "default": "{}",
                            "description": "The processor's params, a JSON object.",
                        },
                    },
                },
                "encoding": {"params": {"contentType": "application/json"}},
            }
        },
    }
}


def _job_response(job: Job, status_code: int = 200, **headers: str) -> JSONResponse:
    body = job_public(job).model_dump(mode="json")
    return JSONResponse(body, status_code=status_code, headers={"ETag": etag_of(job), **headers})


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise ClientGone() from None


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    summary="Upload a file and queue a job",
    openapi_extra=UPLOAD_BODY,
    responses={
        202: {"description": "Accepted: the job is queued. `Location` names it."},
        **problem_docs(400, 413, 415, 422, 507),
    },
)
async def submit_job(request: Request, services: ServicesDep, background: BackgroundTasks) -> Response:
    """Stream the multipart body to disk, record a queued job, answer 202, then dispatch it."""
    try:
        with metrics.track_upload() as upload:
            job = await create_job(
                db=services.db,
                storage=services.storage,
                registry=services.registry,
                settings=services.settings,
                headers=request.headers,
                body=_body(request),
            )
            upload.accepted(job.file_size)
    except ClientGone:
        return Response(status_code=400)  # nobody is listening; the upload left nothing behind
    background.add_task(services.dispatcher.submit, job.id)
    return _job_response(job, 202, Location=f"/v1/jobs/{job.id}", **{"Retry-After": RETRY_AFTER})


@router.get(
    "",
    response_model=JobList,
    summary="List jobs, newest first",
    responses=problem_docs(400, 422),
)
async def list_jobs(
    services: ServicesDep,
    status: JobStatus | None = None,
    processor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JobList:
    jobs, next_cursor = await to_thread.run_sync(
        partial(
            repository.list_jobs, services.db, status=status, processor=processor, limit=limit, cursor=cursor
        )
    )
    return JobList(items=[job_public(job) for job in jobs], next_cursor=next_cursor)


async def _load(services: Services, job_id: str) -> Job:
    job: Job = await to_thread.run_sync(repository.require_job, services.db, job_id)
    return job


async def _wait_for_change(services: Services, job: Job, baseline: str, seconds: float) -> Job:
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
            job = await _load(services, job.id)
    finally:
        services.hub.unsubscribe(job.id, event)
    return job


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="A job's status; long-polls with ?wait=",
    responses={
        304: {"description": "Not modified since the ETag in If-None-Match."},
        **problem_docs(404, 422),
    },
)
async def get_job(
    job_id: str,
    services: ServicesDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for a change.")] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """With ``wait``, returns as soon as the job differs from ``If-None-Match`` (or from its state
    when the request arrived), or after ``wait`` seconds."""
    job = await _load(services, job_id)
    if wait > 0:
        job = await _wait_for_change(services, job, if_none_match or etag_of(job), wait)
    if if_none_match is not None and etag_of(job) in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag_of(job)})
    return _job_response(job)


@router.get(
    "/{job_id}/result",
    summary="Download the result file, or the JSON result",
    responses={
        200: {
            "description": "The output file (with Content-Disposition) or the result JSON.",
            "content": {"application/octet-stream": {}, "application/json": {}},
        },
        **problem_docs(404, 409, 422),
    },
)
async def get_result(job_id: str, services: ServicesDep) -> Response:
    job = await _load(services, job_id)
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
    responses=problem_docs(404, 409, 422),
)
async def cancel_job(job_id: str, services: ServicesDep) -> Response:
    job = await to_thread.run_sync(repository.cancel_job, services.db, job_id)
    services.dispatcher.cancelled(job_id)
    services.hub.notify(job_id)
    return _job_response(job)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=JobPublic,
    summary="Queue a failed or cancelled job again",
    responses=problem_docs(404, 409, 422),
)
async def retry_job(job_id: str, services: ServicesDep, background: BackgroundTasks) -> Response:
    job = await to_thread.run_sync(
        partial(repository.retry_job, services.db, job_id, max_attempts=services.settings.max_attempts)
    )
    services.hub.notify(job_id)
    background.add_task(services.dispatcher.submit, job_id)
    return _job_response(job, 202, Location=f"/v1/jobs/{job.id}", **{"Retry-After": RETRY_AFTER})


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a job and its files (cancelling it first if needed)",
    responses={204: {"description": "Deleted."}, **problem_docs(404, 422)},
)
async def delete_job(job_id: str, services: ServicesDep) -> Response:
    job = await to_thread.run_sync(repository.delete_job, services.db, job_id)
    services.dispatcher.cancelled(job_id)
    services.hub.notify(job_id)
    await to_thread.run_sync(services.storage.delete_job_files, job.id)
    return Response(status_code=204)
