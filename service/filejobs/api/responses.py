"""The job answers the routes and the ``fast_*`` middlewares share: body, ETag, 304, 202/200."""

from __future__ import annotations

from pydantic_core import to_json
from starlette.responses import Response

from filejobs.jobs.intake import Submitted
from filejobs.models import Job, JobStatus, etag_of

#: Seconds a client is told to wait before its first look at a job it has just queued.
RETRY_AFTER = "1"


def job_response(job: Job, status_code: int = 200, **headers: str) -> Response:
    return Response(
        job_json(job),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": etag_of(job), **headers},
    )


def job_json(job: Job) -> bytes:
    """``job_public(job).model_dump_json()``, byte for byte, without building the model: the same
    keys in the same order, rendered by the same serializer (pydantic-core's), for a job the service
    made itself (every field of its type; tests/api/test_job_json.py compares the two)."""
    error = {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None
    return to_json(
        {
            "id": job.id,
            "status": JobStatus(job.status).value,
            "processor": job.processor,
            "params": job.params,
            "file": {
                "name": job.file_name,
                "size": job.file_size,
                "sha256": job.file_sha256,
                "content_type": job.file_content_type,
            },
            "progress": float(job.progress),
            "message": job.message,
            "attempts": job.attempts,
            "error": error,
            "result": job.result,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "updated_at": job.updated_at,
            "version": job.version,
            "notification": job.notification,
            "reused_from": job.reused_from,
            "links": {"self": f"/v1/jobs/{job.id}", "result": f"/v1/jobs/{job.id}/result"},
        }
    )


def conditional_job_response(job: Job, if_none_match: str | None) -> Response:
    """The job body, or ``304`` when ``If-None-Match`` names its current ETag."""
    etag = etag_of(job)
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    return job_response(job)


def queued_response(job: Job) -> Response:
    """``202``: the job is queued (a new upload, a retry); ``Location`` names it."""
    return job_response(job, 202, Location=f"/v1/jobs/{job.id}", **{"Retry-After": RETRY_AFTER})


def submitted_response(submitted: Submitted) -> Response:
    """A new job's ``202``, or ``200`` with ``Idempotent-Replayed: true`` for a repeated request."""
    if not submitted.replayed:
        return queued_response(submitted.job)
    job = submitted.job
    return job_response(job, 200, Location=f"/v1/jobs/{job.id}", **{"Idempotent-Replayed": "true"})
