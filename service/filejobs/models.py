"""The ``jobs`` table and the API models built from it.

The table keeps internal columns (storage keys, lease fields, version); the API only ever sees
:class:`JobPublic`, built by :func:`job_public`.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticUndefined
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    Text,
    literal_column,
    text,
)
from sqlalchemy.orm import configure_mappers
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


#: The predicates of the ``jobs`` table's partial indexes that name a status (migration 0008).
QUEUED_ONLY = "status = 'queued'"
RUNNING_ONLY = "status = 'running'"
SUCCEEDED_ONLY = "status = 'succeeded'"


def partial(predicate: str) -> dict[str, Any]:
    """An :class:`Index`'s keywords making it partial on both databases."""
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


def _ts(nullable: bool = True, **kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable), **kw)


class Job(SQLModel, table=True):
    """One uploaded file and what is being done to it. The row is the queue's truth."""

    __tablename__ = "jobs"
    # Every status change is a non-HOT update on PostgreSQL (``updated_at`` is indexed): it adds an
    # entry to every index whose predicate the new row meets. So the indexes a query reaches only
    # for one status are partial (a claim writes 7 entries, a finish 9; 13 each before migration
    # 0008), and a query that must use one says the predicate with literals (``status = 'queued'``,
    # :func:`status_is`): a bound parameter cannot prove it in a generic plan.
    __table_args__ = (
        # Listing (always one owner's: the API's caller scope), newest first, by status, by processor.
        Index("ix_jobs_owner_id", "owner", "id"),
        Index("ix_jobs_owner_status_id", "owner", "status", "id"),
        Index("ix_jobs_owner_processor_id", "owner", "processor", "id"),
        # The change feed: rows changed since a time.
        Index("ix_jobs_updated_at", "updated_at"),
        # Files: the jobs referencing an upload's key.
        Index("ix_jobs_storage_key", "storage_key"),
        # The sweeper: due queued jobs; running jobs' leases; retention of finished ones.
        Index("ix_jobs_queued_run_after", "run_after", **partial(QUEUED_ONLY)),
        Index("ix_jobs_running_lease_expires_at", "lease_expires_at", **partial(RUNNING_ONLY)),
        Index("ix_jobs_finished_at", "finished_at", **partial("finished_at IS NOT NULL")),
        # Files: the jobs referencing an output (files._outputs_referenced: a prefix match).
        Index(
            "ix_jobs_output_key",
            "output_key",
            postgresql_ops={"output_key": "varchar_pattern_ops"},  # LIKE 'prefix%' in any collation
            **partial("output_key IS NOT NULL"),
        ),
        # Result reuse's lookup: only the succeeded jobs of this content, processor and params.
        Index(
            "ix_jobs_reuse", "owner", "file_sha256", "processor", "params_digest", **partial(SUCCEEDED_ONLY)
        ),
    )

    id: str = Field(primary_key=True, max_length=36)
    #: The API key that made the job ("" when the service was open): its tenant.
    owner: str = Field(default="", max_length=36, sa_column_kwargs={"server_default": ""})
    status: str = Field(default=JobStatus.queued, max_length=16)
    processor: str = Field(max_length=100)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: Values of the params a processor declares as ``SecretStr``: handed to the worker, never shown.
    secret_params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))

    file_name: str = Field(max_length=1024)
    file_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    file_sha256: str = Field(max_length=64)
    file_content_type: str = Field(max_length=255)
    declared_content_type: str | None = Field(default=None, max_length=255)
    storage_key: str = Field(max_length=255)

    output_key: str | None = Field(default=None, max_length=255)
    output_name: str | None = Field(default=None, max_length=1024)
    output_content_type: str | None = Field(default=None, max_length=255)

    progress: float = 0.0
    message: str | None = Field(default=None, max_length=1000)
    attempts: int = 0
    max_attempts: int
    error_code: str | None = Field(default=None, max_length=100)
    error_message: str | None = Field(default=None, max_length=2000)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))

    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    run_after: datetime = _ts(nullable=False)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = _ts()
    #: When a broker last accepted a message for this queued spell (None: never; the sweeper publishes).
    dispatched_at: datetime | None = _ts()
    version: int = 1
    #: The webhook notification of its last finish: None (none asked for), pending, delivered, failed.
    notification: str | None = Field(default=None, max_length=16)
    #: The processor's ``version`` when the job was made (result reuse matches on it).
    processor_version: str | None = Field(default=None, max_length=100)
    #: SHA-256 of the canonical JSON of all its params (secret ones too): result reuse matches on it.
    params_digest: str | None = Field(default=None, max_length=64)
    #: The job whose result this one took instead of running (None: it ran, or will).
    reused_from: str | None = Field(default=None, max_length=36)
    #: A one-off URL told of this job's finish (the ``callback_url`` form field), signed with the
    #: key's default secret (:class:`WebhookSecret`).
    callback_url: str | None = Field(default=None, max_length=2048)


def status_is(status: JobStatus) -> ColumnElement[bool]:
    """``jobs.status = '<status>'`` with a literal, not a bound parameter: only a literal proves a
    partial index's predicate (:data:`QUEUED_ONLY`, ...) in a generic plan, which PostgreSQL may
    pick for a statement psycopg has prepared, and SQLite needs one to use such an index at all."""
    return Job.__table__.c.status == literal_column(f"'{status.value}'")  # type: ignore[attr-defined,no-any-return]


#: Job's fields whose default is one immutable value, and the others' (made anew for each job).
_FIXED_DEFAULTS: dict[str, Any] = {}
_FRESH_DEFAULTS: list[str] = []
for _name, _info in Job.model_fields.items():
    if _info.default_factory is None and (_info.default is PydanticUndefined or _info.default is None):
        _FIXED_DEFAULTS[_name] = None  # required (always given by the service) or None
    elif _info.default_factory is None and isinstance(_info.default, int | float | str | bool | enum.Enum):
        _FIXED_DEFAULTS[_name] = _info.default  # immutable: shared by every job
    else:
        _FRESH_DEFAULTS.append(_name)


def new_job(**values: Any) -> Job:
    """A :class:`Job` from values the service made itself: every field set (defaults filled in),
    without validation (about ten times cheaper than ``Job(...)``)."""
    fields = Job.model_fields
    defaults = {**_FIXED_DEFAULTS, **values}
    for name in _FRESH_DEFAULTS:
        if name not in values:
            default = fields[name].get_default(call_default_factory=True)
            defaults[name] = None if default is PydanticUndefined else default
    return Job.model_construct(**defaults)


class StoredFile(SQLModel, table=True):
    """One content a tenant has stored: its bytes are kept once per (owner, SHA-256), under
    ``storage_key``, for as long as a job of that owner references the key (the count is derived:
    the jobs whose ``storage_key`` it is; the row goes in the transaction that removes the last)."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_storage_key", "storage_key"),)

    owner: str = Field(primary_key=True, max_length=36)
    sha256: str = Field(primary_key=True, max_length=64)
    storage_key: str = Field(max_length=255)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    content_type: str = Field(max_length=255)
    created_at: datetime = _ts(nullable=False)


class UploadBlob(SQLModel, table=True):
    """A small upload's bytes kept in the database (``inline/<job id>``: :mod:`filejobs.jobs.inline_uploads`),
    inserted in the transaction that inserts its job's row, deleted in the one that removes its last
    reference (:func:`filejobs.jobs.files.release`)."""

    __tablename__ = "upload_blobs"

    storage_key: str = Field(primary_key=True, max_length=255)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ApiKey(SQLModel, table=True):
    """An API key: only its SHA-256 is stored. Revoked keys stay (their jobs keep their owner)."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=100, unique=True)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = _ts()


class IdempotencyKey(SQLModel, table=True):
    """One Idempotency-Key of one caller: in progress (an upload holds it) or done (names a job)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    scope: str = Field(primary_key=True, max_length=36)
    key: str = Field(primary_key=True, max_length=255)
    state: str = Field(max_length=16)
    token: str = Field(max_length=64)
    holder: str | None = Field(default=None, max_length=200)
    fingerprint: str | None = Field(default=None, max_length=64)
    job_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)
    lease_expires_at: datetime | None = _ts()


class WebhookEndpoint(SQLModel, table=True):
    """A URL one API key wants job events POSTed to, with the secret that signs them."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_owner_id", "owner", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    owner: str = Field(max_length=36)
    url: str = Field(max_length=2048)
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    description: str = Field(default="", max_length=500)
    #: Stored as is: signing needs it (an HMAC key, not a password).
    secret: str = Field(max_length=100)
    #: The secret before the last rotation, which signs too until ``previous_secret_until``.
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_until: datetime | None = _ts()
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=500)
    #: Since when every attempt failed (None: the last one succeeded, or none was made).
    failing_since: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class WebhookSecret(SQLModel, table=True):
    """A key's default signing secret: it signs the deliveries to jobs' one-off ``callback_url``."""

    __tablename__ = "webhook_secrets"

    owner: str = Field(primary_key=True, max_length=36)
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_until: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: the outbox row, written in the transaction of the change it tells
    of, and its delivery attempts. Its id is the ``webhook-id`` every attempt sends."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_job_id", "job_id"),
        Index("ix_webhook_deliveries_owner_status", "owner", "status"),
        Index("ix_webhook_deliveries_status_finished_at", "status", "finished_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    owner: str = Field(max_length=36)
    #: The endpoint, or None for a job's one-off ``callback_url`` (then ``url`` holds it).
    endpoint_id: str | None = Field(default=None, max_length=40)
    url: str | None = Field(default=None, max_length=2048)
    job_id: str | None = Field(default=None, max_length=36)
    event_type: str = Field(max_length=50)
    #: The exact body every attempt sends (and signs).
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=DeliveryStatus.pending, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = _ts(nullable=False)
    last_attempt_at: datetime | None = _ts()
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts(nullable=False)
    finished_at: datetime | None = _ts()


# ---- API models -----------------------------------------------------------------------------


class FileInfo(BaseModel):
    name: str
    size: int
    sha256: str
    content_type: str


class JobError(BaseModel):
    code: str
    message: str


class JobLinks(BaseModel):
    self: str
    result: str


class JobPublic(BaseModel):
    """The job body of the HTTP contract."""

    model_config = ConfigDict(json_schema_extra={"title": "Job"})

    id: str
    status: JobStatus
    processor: str
    params: dict[str, Any]
    file: FileInfo
    progress: float
    message: str | None
    attempts: int
    error: JobError | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: When the job last changed; ``version`` counts its changes (each event carries both).
    updated_at: datetime
    version: int
    #: Its webhook notification: null (no endpoint wanted it), pending, delivered or failed.
    notification: str | None = None
    #: The job whose kept result this one took instead of running (null: it ran, or will).
    reused_from: str | None = None
    links: JobLinks


class JobList(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None


class ProcessorInfo(BaseModel):
    name: str
    description: str
    accepts: list[str]
    params_schema: dict[str, Any]


class ProcessorList(BaseModel):
    items: list[ProcessorInfo]


def job_public(job: Job) -> JobPublic:
    """The public body of ``job``; never exposes storage keys or lease fields."""
    error = JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None
    return JobPublic(
        id=job.id,
        status=JobStatus(job.status),
        processor=job.processor,
        params=job.params,
        file=FileInfo(
            name=job.file_name,
            size=job.file_size,
            sha256=job.file_sha256,
            content_type=job.file_content_type,
        ),
        progress=job.progress,
        message=job.message,
        attempts=job.attempts,
        error=error,
        result=job.result,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        version=job.version,
        notification=job.notification,
        reused_from=job.reused_from,
        links=JobLinks(self=f"/v1/jobs/{job.id}", result=f"/v1/jobs/{job.id}/result"),
    )


def etag_of(job: Job) -> str:
    """A strong ETag that changes whenever the row does."""
    return etag_for(job.id, job.version)


def etag_for(job_id: str, version: int) -> str:
    """:func:`etag_of` a job from its id and ``version`` alone (the status poll's fast path)."""
    return f'"{job_id}.{version}"'


def http_date(moment: datetime) -> str:
    """``moment`` as an RFC 9110 date (``Sun, 06 Dec 2026 11:00:00 GMT``): ``Last-Modified``,
    tus's ``Upload-Expires``."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def none_match(etag: str, if_none_match: str | None) -> bool:
    """Whether an ``If-None-Match`` header matches the current ``etag`` (RFC 9110 §13.1.2): ``*``
    (any current representation), or one of its comma-separated tags, compared weakly (``W/"x"``
    matches ``"x"``)."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class ChangeListener(SQLModel, table=True):
    """An API process listening to job changes (``LISTEN filejobs_jobs``) while it has an event
    stream open, until ``expires_at`` (renewed while it listens). The jobs table's trigger sends its
    ``NOTIFY`` only while such a row is current (PostgreSQL; migration 0009): a notifying commit
    holds a cluster-wide lock through its WAL flush, which every other notifying commit waits for."""

    __tablename__ = "change_listeners"

    id: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = _ts(nullable=False)


# Instances made with ``model_construct`` (see :func:`new_job` and filejobs.jobs.fast_read) read
# their fields through SQLAlchemy's instrumentation, which exists only once the mappers are
# configured; the first query would do it, but a fast read may come before any query.
configure_mappers()
