"""The job answers the routes and the ``fast_*`` middlewares share: body, ETag, 304, 202/200."""

from __future__ import annotations

from starlette.responses import Response

from filejobs.jobs.intake import Submitted
from filejobs.models import Job, etag_of, job_public

#: Seconds a client is told to wait before its first look at a job it has just queued.
RETRY_AFTER = "1"


def job_response(job: Job, status_code: int = 200, **headers: str) -> Response:
    # pydantic's own JSON encoder: no dict of Python objects, no json.dumps
    return Response(
        job_public(job).model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": etag_of(job), **headers},
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
