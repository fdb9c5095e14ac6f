"""``/v1/jobs``: submit, look at, wait on, list, download, cancel, retry, delete."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, BackgroundTasks, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from filejobs.api.auth import CallerDep
from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.api.responses import conditional_job_response, job_response, queued_response, submitted_response
from filejobs.api.result_download import object_result
from filejobs.api.result_file import file_result
from filejobs.api.upload_body import upload_body
from filejobs.errors import ClientGone, Conflict
from filejobs.jobs import commands, idempotency, repository
from filejobs.jobs.intake import submit_upload
from filejobs.jobs.queries import load_job, wait_for_change
from filejobs.models import Job, JobList, JobPublic, JobStatus, etag_of, job_public, none_match
from filejobs.object_storage import S3Storage
from filejobs.services import Services

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_WAIT = 30.0

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
                        "callback_url": {
                            "type": "string",
                            "maxLength": 2048,
                            "description": "A URL to POST this job's final status to once (job.succeeded, "
                            "job.failed, job.cancelled), signed per Standard Webhooks with the key's "
                            "default secret (POST /v1/callback-secret); https and public addresses "
                            "only, else 422.",
                        },
                    },
                },
                "encoding": {"params": {"contentType": "application/json"}},
            }
        },
    }
}


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
        **problem_docs(400, 401, 408, 409, 413, 415, 422, 428, 429, 503, 507),
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
    try:
        submitted = await submit_upload(
            services=services,
            owner=caller.scope,
            headers=request.headers,
            body=upload_body(services, request, caller),
            idempotency_key=idempotency_key,
        )
    except ClientGone:
        return Response(status_code=400)  # nobody is listening; the upload left nothing behind
    if not submitted.replayed:
        background.add_task(
            commands.dispatch, hub=services.hub, dispatcher=services.dispatcher, job_id=submitted.job.id
        )
    return submitted_response(submitted)


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
            repository.list_jobs,
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
    job = await load_job(reader=services.reader, job_id=job_id, owner=caller.scope)
    current = etag_of(job)
    # A header that names another state (an older ETag) is answered at once: it differs already.
    unchanged = if_none_match is None or none_match(current, if_none_match)
    if wait > 0 and unchanged and not JobStatus(job.status).terminal:
        job = await wait_for_change(
            reader=services.reader,
            hub=services.hub,
            job=job,
            owner=caller.scope,
            baseline=current,
            seconds=wait,
        )
    return conditional_job_response(job, if_none_match)


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
        206: {"description": "The requested byte range of the output file (Range: bytes=a-b)."},
        304: {"description": "Not modified since the ETag in If-None-Match (an output file)."},
        307: {"description": "FILEJOBS_RESULT_REDIRECT on an S3 backend: a short-lived presigned URL."},
        **problem_docs(401, 404, 409, 410, 416, 422, 429),
    },
)
async def get_result(
    request: Request,
    job_id: str,
    services: ServicesDep,
    caller: CallerDep,
) -> Response:
    job = await load_job(reader=services.reader, job_id=job_id, owner=caller.scope)
    if job.status != JobStatus.succeeded.value:
        raise Conflict(
            f"The job is {job.status}; its result exists once it has succeeded.", status_of_job=job.status
        )
    if job.output_key:
        path = services.storage.local_path(job.output_key)
        if path is None:
            return await _object_result(services, job, request.headers)
        return await file_result(
            path,
            name=job.output_name,
            content_type=job.output_content_type,
            headers=request.headers,
        )
    return JSONResponse(job.result or {})


async def _object_result(services: Services, job: Job, headers: Headers) -> Response:
    storage = services.storage
    assert isinstance(storage, S3Storage), "only the S3 backend has no local paths"
    assert job.output_key is not None
    return await object_result(
        storage,
        job.output_key,
        name=job.output_name or "result",
        content_type=job.output_content_type or "application/octet-stream",
        headers=headers,
        redirect=services.settings.result_redirect,
        redirect_ttl=services.settings.result_redirect_ttl,
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a queued or running job",
    responses=problem_docs(401, 404, 409, 422, 429),
)
async def cancel_job(job_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    job = await commands.cancel_job(
        db=services.db,
        dispatcher=services.dispatcher,
        hub=services.hub,
        job_id=job_id,
        owner=caller.scope,
        max_pending_webhooks=services.settings.webhook_max_pending,
    )
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
    job = await commands.retry_job(
        db=services.db,
        reader=services.reader,
        admission=services.admission,
        hub=services.hub,
        max_attempts=services.settings.max_attempts,
        job_id=job_id,
        owner=caller.scope,
    )
    background.add_task(commands.dispatch, hub=services.hub, dispatcher=services.dispatcher, job_id=job_id)
    return queued_response(job)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a job and its files (cancelling it first if needed)",
    responses={204: {"description": "Deleted."}, **problem_docs(401, 404, 422, 429)},
)
async def delete_job(job_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    await commands.delete_job(
        db=services.db,
        dispatcher=services.dispatcher,
        feed=services.feed,
        hub=services.hub,
        storage=services.storage,
        job_id=job_id,
        owner=caller.scope,
    )
    return Response(status_code=204)
