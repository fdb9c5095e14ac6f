"""Job rows made directly, without an upload: for tests and measurements of the queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from filejobs.ids import new_job_id
from filejobs.models import Job, JobStatus, utcnow


def make_job(**overrides: Any) -> Job:
    """A queued job row (without a stored file)."""
    now = utcnow()
    job_id = overrides.pop("id", None) or new_job_id()
    values: dict[str, Any] = {
        "id": job_id,
        "status": JobStatus.queued.value,
        "processor": "inspect",
        "params": {},
        "file_name": "f.txt",
        "file_size": 3,
        "file_sha256": "0" * 64,
        "file_content_type": "text/plain",
        "storage_key": f"uploads/{job_id}",
        "max_attempts": 3,
        "created_at": now,
        "updated_at": now,
        "run_after": now - timedelta(seconds=1),
    }
    values.update(overrides)
    return Job(**values)
