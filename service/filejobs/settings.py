"""The one Settings class (prefix ``FILEJOBS_``), read through :func:`get_settings`.

Nothing else in the package reads the environment (tests/test_layers.py checks it; the client's
``FILEJOBS_URL``/``FILEJOBS_API_KEY`` are :class:`filejobs.client.settings.ClientSettings`). Tests
build their own ``Settings(...)``.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from filejobs.memory import parse_size

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: prometheus-client's multiprocess directory variable (no FILEJOBS_ prefix: prometheus-client reads
#: it too, when it is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

MiB = 1024 * 1024
GiB = 1024 * MiB


class Settings(BaseSettings):
    """Every knob of the service. Defaults run on one machine with nothing else installed."""

    model_config = SettingsConfigDict(env_prefix="FILEJOBS_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Uploads, outputs and the SQLite database.")
    storage_url: str = Field(
        default="",
        description="Where uploads and outputs are stored: file:///path (default: DATA_DIR) or "
        "s3://bucket/prefix (an S3-compatible bucket; credentials and region the standard AWS way: "
        "AWS_* variables, a profile, an instance role).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3 API's URL for a bucket not on AWS (MinIO, R2, Ceph): http://host:9000.",
    )
    s3_part_size: int = Field(
        default=5 * MiB,
        ge=5 * MiB,
        le=64 * MiB,
        description="Bytes per part of an upload streamed to S3 (a file smaller than one part goes up "
        "in a single PUT); the part grows past this when MAX_UPLOAD_BYTES needs more than 10,000 parts.",
    )
    s3_parts_in_flight: int = Field(
        default=3,
        ge=1,
        le=3,
        description="Parts of one upload sent to S3 at once; the upload waits (reads nothing more) while "
        "they are all in flight, so it holds at most this many parts in memory.",
    )
    s3_sign_payload: bool = Field(
        default=False,
        description="Sign each part's SHA-256 over a plain-http S3 endpoint (botocore's default there; "
        "a pass over every byte). Off: a part's integrity is its signed CRC32 header, checked by the "
        "store, as over https, where the payload is never signed. Turn on for plain http across an "
        "untrusted network.",
    )
    s3_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to connect to, or wait on a read from, the S3 endpoint."
    )
    result_redirect: bool = Field(
        default=False,
        description="S3: answer GET /v1/jobs/{id}/result with 307 to a presigned URL instead of "
        "streaming the file through the API.",
    )
    result_redirect_ttl: float = Field(
        default=300.0, gt=0, le=7 * 86400, description="Seconds a result's presigned URL stays valid."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy or plain PostgreSQL URL; default SQLite under DATA_DIR."
    )
    max_upload_bytes: int = Field(default=10 * GiB, gt=0, description="Largest accepted file.")
    max_fields: int = Field(default=8, gt=0, description="Most form fields besides the file.")
    max_field_bytes: int = Field(default=64 * 1024, gt=0, description="Largest non-file form field.")
    backend: Literal["local", "celery"] = Field(
        default="local", description="local: in-process worker pool; celery: publish to BROKER_URL."
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker, redis://host:6379/0 or amqp://user:pass@host:5672//."
    )
    queue: str = Field(
        default="filejobs", min_length=1, max_length=200, description="Celery queue the jobs go to."
    )
    redispatch_after: float = Field(
        default=60.0,
        gt=0,
        description="Celery: seconds after which a queued job's message counts as possibly lost.",
    )
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0)
    worker_process: bool = Field(
        default=False,
        description="Local backend: run the WORKERS job threads (their claims, runs and final statuses) "
        "in a process of their own beside each API process, not in it: their Python then has a GIL "
        "of its own (see docs/performance.md).",
    )
    api_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes `filejobs serve` answers HTTP in (uvicorn workers); the local backend's "
        "WORKERS job processes are shared out among them.",
    )
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(MULTIPROC_ENV, "prometheus_multiproc_dir"),
        description="PROMETHEUS_MULTIPROC_DIR (no FILEJOBS_ prefix): prometheus-client's multiprocess "
        "directory; the processes of one host that share it report their counters summed. `filejobs "
        "serve` and `filejobs worker` create it at startup.",
    )
    supervised: int | None = Field(
        default=None,
        description="Set by `filejobs serve --processes N` for its HTTP processes, not by users: the "
        "pid of the supervisor, whose death makes them shut down.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request head (request line and headers) `filejobs serve` reads; a longer "
        "one gets 431 as soon as it crosses this, before the rest is read.",
    )
    max_header_line_bytes: int = Field(
        default=16 * 1024,
        ge=256,
        description="Longest line of a request head (the request line or one header); longer: 431.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a request's head may take from its first byte to its end; slower: 408 and "
        "the connection is closed.",
    )
    idle_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a connection may stay open without a request in progress (before its first "
        "request and between requests) before it is closed.",
    )
    processor_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Niceness of the processes that run processors: CPU-heavy jobs yield to the API, "
        "so status answers stay fast while every core is busy (0: same priority).",
    )
    job_timeout: float = Field(default=3600.0, gt=0, description="Seconds before a job's process is killed.")
    max_attempts: int = Field(default=3, ge=1)
    reuse: bool = Field(
        default=True,
        description="Reuse results: a job whose file (same key's SHA-256), processor, processor "
        "version and params match a kept succeeded job's completes at once with its result "
        "(false: every job runs).",
    )
    retry_backoff: float = Field(default=2.0, ge=0, description="Seconds before the first retry; doubles.")
    retry_backoff_max: float = Field(default=300.0, ge=0)
    lease_seconds: float = Field(
        default=30.0, gt=0, description="A running job not renewed for this long is lost."
    )
    cancel_grace: float = Field(default=5.0, ge=0, description="Seconds a cancelled job may take to stop.")
    shutdown_grace: float = Field(default=30.0, ge=0, description="Seconds SIGTERM waits for running jobs.")
    sweep_interval: float = Field(default=10.0, gt=0)
    retention: timedelta = Field(
        default=timedelta(days=7), description="Finished jobs are deleted after this."
    )
    temp_max_age: float = Field(
        default=3600.0, gt=0, description="Unfinished upload temp files older than this go."
    )
    upload_idle_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds an upload's body may send nothing before it is ended (408, its temp file "
        "removed).",
    )
    upload_expiry: timedelta = Field(
        default=timedelta(hours=24),
        description="How long a resumable (tus) upload may stay incomplete before the sweeper removes "
        "it; a completed one's record (which names its job) is kept as long after completion.",
    )
    max_resumable_uploads: int = Field(
        default=20, ge=1, description="Incomplete resumable uploads one key may hold at once; more: 429."
    )
    max_resumable_bytes: int = Field(
        default=20 * GiB,
        ge=0,
        description="Bytes one key's incomplete resumable uploads may hold (their declared lengths, or "
        "what arrived for a deferred length); more: 429 at creation, 413 on a PATCH; 0: no limit.",
    )
    resumable_checkpoint_bytes: int = Field(
        default=64 * MiB,
        ge=1024 * 1024,
        description="During a long resumable PATCH, its bytes are fsynced and its offset recorded every "
        "this many bytes, so a server killed mid-PATCH resumes from there (a PATCH with Upload-Checksum "
        "is kept whole or not at all).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (comma-separated, or *) whose browsers may call /v1 (CORS), e.g. a tus "
        "client on another site; the tus headers are exposed to them. Empty: no CORS headers.",
    )
    progress_interval: float = Field(default=0.5, ge=0, description="Least seconds between progress writes.")
    auto_migrate: bool = Field(default=True, description="Apply migrations when the service starts.")
    max_image_pixels: int = Field(
        default=64_000_000, gt=0, description="Images with more pixels fail (decompression bombs)."
    )
    max_pdf_pages: int = Field(default=2000, gt=0, description="PDFs with more pages fail.")
    job_memory_limit: int = Field(
        default=1 * GiB,
        ge=0,
        description="Address space (RLIMIT_AS) of the process a job runs in, in bytes or as 512MiB, "
        "1GiB, 1500MB: a job that needs more fails with resource_exhausted; 0: no limit.",
    )
    inline_max_bytes: int = Field(
        default=1 * MiB,
        ge=0,
        description="A job of a light processor (inspect) whose input is at most this many bytes runs "
        "in the worker's own thread, not in the child process (bytes or 1MiB, 256KiB; 0: never).",
    )
    inline_upload_bytes: int = Field(
        default=16 * 1024,
        ge=0,
        le=64 * 1024,
        description="An upload of at most this many bytes that arrives whole is kept in the database, "
        "committed with its job's row, not as a file of its own (local data directory only; bytes or "
        "16KiB, up to 64KiB; 0: never).",
    )
    require_auth: bool = Field(
        default=False, description="Require an API key on /v1 even before any key has been made."
    )
    allow_open_bind: bool = Field(
        default=False,
        description="Let `filejobs serve` listen on a non-loopback address without API keys.",
    )
    idempotency_ttl: timedelta = Field(
        default=timedelta(hours=24), description="How long an Idempotency-Key is remembered."
    )
    rate_limit: float = Field(default=100.0, ge=0, description="Requests per second per API key; 0: none.")
    rate_burst: int = Field(default=200, ge=1, description="Requests a key may make at once above the rate.")
    max_unfinished_jobs: int = Field(
        default=10_000, ge=0, description="Queued or running jobs one key may have; 0: no limit."
    )
    max_queue_depth: int = Field(
        default=100_000, ge=0, description="Queued jobs above which uploads get 503; 0: no limit."
    )
    min_free_disk: int = Field(
        default=256 * MiB, ge=0, description="Bytes the data directory keeps free; uploads get 507 below."
    )
    events_throttle: float = Field(
        default=0.25, ge=0, description="Least seconds between two progress events of one job on a stream."
    )
    events_heartbeat: float = Field(
        default=15.0, gt=0, description="Seconds between keep-alive comments on an idle event stream."
    )
    events_poll_interval: float = Field(
        default=0.25,
        gt=0,
        description="Seconds between looks for changed rows while streams are open (SQLite; PostgreSQL "
        "is told by LISTEN/NOTIFY and looks only after its listener reconnects).",
    )
    events_lookback: float = Field(
        default=5.0,
        ge=0,
        description="Seconds of changes looked at again, for writes that commit after later ones.",
    )
    max_event_streams: int = Field(
        default=1000, ge=1, description="Event streams one API process holds open at once; more get 503."
    )
    max_event_streams_per_key: int = Field(
        default=50,
        ge=0,
        description="Event streams one API key may hold open in one API process; more get 429 (0: no "
        "limit). Anonymous callers of an open service have only MAX_EVENT_STREAMS.",
    )
    events_key_check: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between checks that the keys of open event streams are still valid: a "
        "revoked key's streams end within this.",
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, description="Seconds one webhook delivery attempt may take (connect to answer)."
    )
    webhook_retry_schedule: Annotated[list[Annotated[float, Field(ge=0)]], NoDecode] = Field(
        default_factory=lambda: [5.0, 60.0, 600.0, 3600.0, 21600.0, 43200.0],
        min_length=1,
        description="Seconds before each retry of a failed webhook delivery, comma-separated (durations "
        "like 5s, 10m, 6h too), each with ±20 % jitter; after the last one the delivery has failed. "
        "Default 5s,1m,10m,1h,6h,12h: about 19 h of tries.",
    )
    webhook_disable_after: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds an endpoint may fail every attempt before it is disabled (it says why).",
    )
    webhook_allow_http: bool = Field(
        default=False, description="Accept plain http:// webhook URLs (otherwise https only)."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Accept webhook URLs that resolve to loopback, private, link-local, multicast or "
        "cloud metadata addresses (tests and private networks).",
    )
    webhook_max_endpoints: int = Field(
        default=10, ge=1, description="Webhook endpoints one API key may have."
    )
    webhook_max_pending: int = Field(
        default=10_000,
        ge=1,
        description="Undelivered webhook deliveries one API key may have; events past it are recorded as "
        "failed at once (reason given) instead of queued.",
    )
    webhook_concurrency: int = Field(
        default=64, ge=1, description="Webhook deliveries one sender makes at once, all endpoints together."
    )
    webhook_endpoint_concurrency: int = Field(
        default=4,
        ge=1,
        description="Webhook deliveries in flight to one endpoint (a key's callback URLs count as one): a "
        "slow receiver holds at most this many, never the others' turns.",
    )
    webhook_poll_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between the sender's looks for due deliveries when nothing woke it (a job "
        "change in this process, or one NOTIFY tells, wakes it at once).",
    )
    webhook_secret_grace: float = Field(
        default=86400.0,
        ge=0,
        description="Seconds the old secret keeps signing (beside the new one) after a rotation.",
    )
    processors: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra processors as 'module:attribute', comma-separated."
    )

    @field_validator("prometheus_multiproc_dir", "supervised", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable is no variable (as prometheus-client takes it)."""
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _drivable(cls, value: str | None) -> str | None:
        """Checked when the settings are read: a bad scheme or a driver not installed is one line at
        startup, not a traceback on the first request or job."""
        if value:
            check_database_url(value)
        return value

    @field_validator("processors", "cors_origins", mode="before")
    @classmethod
    def _split_processors(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        """``5s,1m,10m`` or ``5,60,600`` (seconds) as a list of seconds."""
        if isinstance(value, str):
            seconds: list[object] = []
            for item in value.split(","):
                match = _DURATION.fullmatch(item.strip())
                if not match:
                    return value  # pydantic says what is wrong
                seconds.append(float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"])
            return seconds
        return value

    @field_validator("retention", "idempotency_ttl", "upload_expiry", mode="before")
    @classmethod
    def _parse_duration(cls, value: object) -> object:
        """Accept ``3600`` (seconds), ``90s``, ``30m``, ``12h``, ``7d`` besides ISO 8601 (``P7D``)."""
        if isinstance(value, str):
            match = _DURATION.fullmatch(value.strip())
            if match:
                number, unit = float(match.group(1)), match.group(2) or "s"
                return timedelta(seconds=number * _UNIT_SECONDS[unit])
        return value

    @field_validator("job_memory_limit", "inline_max_bytes", "inline_upload_bytes", mode="before")
    @classmethod
    def _parse_size(cls, value: object) -> object:
        """Accept ``512MiB``, ``1GiB``, ``512M``, ``1500MB`` besides a number of bytes."""
        if isinstance(value, str):
            size = parse_size(value)
            return value if size is None else size
        return value

    @property
    def runs_worker_process(self) -> bool:
        """The local backend's pool runs in a process of its own (``WORKER_PROCESS``, with workers)."""
        return self.backend == "local" and self.workers > 0 and self.worker_process

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL, with the driver chosen for plain ``postgresql://`` URLs."""
        if not self.database_url:
            return f"sqlite:///{(self.data_dir / 'filejobs.db').resolve()}"
        return sqlalchemy_url(self.database_url)


def sqlalchemy_url(url: str) -> str:
    """``url`` as SQLAlchemy takes it: plain ``postgres://`` and ``postgresql://`` URLs get psycopg."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def import_database_driver(url: str) -> None:
    """Import the driver of ``url``'s SQLAlchemy dialect (psycopg for PostgreSQL); raises what
    SQLAlchemy raises for a URL it cannot parse, a dialect it does not know, a driver not installed."""
    from sqlalchemy.engine import make_url

    make_url(sqlalchemy_url(url)).get_dialect().import_dbapi()


def check_database_url(url: str) -> None:
    """ValueError unless ``url`` names a database SQLAlchemy can drive here: a URL it parses, of a
    dialect it knows, whose driver is installed (imported now). The error never repeats the URL
    (it may hold a password)."""
    try:
        import_database_driver(url)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"not a database URL filejobs can use ({reason})") from None


def get_settings() -> Settings:
    """Read the settings from the environment. Called at startup, never at import time."""
    return Settings()
