"""The job answers the routes and the ``fast_*`` middlewares share: body, ETag, 304, 202/200."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic_core import to_json
from starlette.responses import Response

from filejobs.jobs.intake import Submitted
from filejobs.models import Job, JobStatus, etag_of, none_match

#: Seconds a client is told to wait before its first look at a job it has just queued.
RETRY_AFTER = "1"


def job_response(job: Job, status_code: int = 200, **headers: str) -> Response:
    return Response(
        job_json(job),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": etag_of(job), **headers},
    )


#: The row's fields the job body shows.
_SHOWN = frozenset(
    {
        "id", "status", "processor", "params", "file_name", "file_size", "file_sha256",
        "file_content_type", "progress", "message", "attempts", "error_code", "error_message",
        "result", "created_at", "started_at", "finished_at", "updated_at", "version",
        "notification", "reused_from",
    }
)  # fmt: skip


def job_json(job: Job) -> bytes:
    """``job_public(job).model_dump_json()``, byte for byte, without building the model: the same
    keys in the same order, rendered by the same serializer (pydantic-core's), for a job whose
    fields have their types (the service's own rows; tests/test_fast_upload.py compares the two).
    The values are read from the instance's ``__dict__`` when all are there (a row the service
    made: SQLAlchemy's attribute instrumentation costs a third of the rendering), else through the
    attributes (which load what an expired row lacks)."""
    state = job.__dict__
    v: Callable[[str], Any] = state.__getitem__ if state.keys() >= _SHOWN else partial(getattr, job)
    job_id = v("id")
    code = v("error_code")
    return to_json(
        {
            "id": job_id,
            "status": JobStatus(v("status")).value,
            "processor": v("processor"),
            "params": v("params"),
            "file": {
                "name": v("file_name"),
                "size": v("file_size"),
                "sha256": v("file_sha256"),
                "content_type": v("file_content_type"),
            },
            "progress": float(v("progress")),
            "message": v("message"),
            "attempts": v("attempts"),
            "error": {"code": code, "message": v("error_message") or ""} if code else None,
            "result": v("result"),
            "created_at": v("created_at"),
            "started_at": v("started_at"),
            "finished_at": v("finished_at"),
            "updated_at": v("updated_at"),
            "version": v("version"),
            "notification": v("notification"),
            "reused_from": v("reused_from"),
            "links": {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"},
        }
    )


def conditional_job_response(job: Job, if_none_match: str | None) -> Response:
    """The job body, or ``304`` when ``If-None-Match`` matches its current ETag."""
    etag = etag_of(job)
    if none_match(etag, if_none_match):
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
