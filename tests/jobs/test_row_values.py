"""``new_job`` (defaults filled in from precomputed values) and the group committer's
``row_values`` give what the plain pydantic ways give."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from filejobs.jobs.group_commit import row_values
from filejobs.models import Job, new_job
from filejobs.testing import make_job

GIVEN = (
    "id", "owner", "status", "processor", "params", "secret_params", "file_name", "file_size",
    "file_sha256", "file_content_type", "declared_content_type", "storage_key", "max_attempts",
    "callback_url", "created_at", "updated_at", "run_after", "processor_version", "params_digest",
)  # fmt: skip


def plain_new_job(**values: Any) -> Job:
    """new_job as it was: every default asked of pydantic for each job."""
    defaults = {
        name: None if default is PydanticUndefined else default
        for name, info in Job.model_fields.items()
        if name not in values
        for default in [info.get_default(call_default_factory=True)]
    }
    return Job.model_construct(**defaults, **values)


def test_new_job_fills_the_defaults_as_pydantic_does() -> None:
    source = make_job(params={"a": [1, 2]}, secret_params={"s": "x"}, callback_url="https://x.test/")
    values = {name: getattr(source, name) for name in GIVEN}
    assert new_job(**values).model_dump() == plain_new_job(**values).model_dump()
    bare = new_job(id="j")
    assert bare.model_dump() == plain_new_job(id="j").model_dump()
    assert bare.status == "queued"
    assert bare.version == 1
    assert bare.progress == 0.0
    assert bare.params == {}
    assert new_job(id="k").params is not bare.params  # a fresh dict for each job


def test_row_values_are_model_dump() -> None:
    source = make_job(params={"a": 1})
    made = new_job(**{name: getattr(source, name) for name in GIVEN})
    assert row_values(made) == made.model_dump()
    assert list(row_values(made)) == list(made.model_dump())
    # a job without every field in its __dict__ (Job(...) leaves unset ones to the class)
    assert row_values(source) == source.model_dump()
