"""The client's view of the service's bodies (the HTTP contract's shapes).

Defined here rather than imported from the server so the client stays importable without the
server's dependencies, and tolerant: members a newer server adds are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

#: The statuses a job never leaves except by an explicit retry.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FileInfo(_Body):
    """The uploaded file as the server stored it; ``content_type`` is sniffed from the content."""

    name: str
    size: int
    sha256: str
    content_type: str


class JobError(_Body):
    """Why a job failed: a machine-readable ``code`` and a message for people."""

    code: str
    message: str


class JobLinks(_Body):
    self: str
    result: str


class Job(_Body):
    """A job body: ``queued → running → succeeded | failed | cancelled``."""

    id: str
    status: str
    processor: str
    params: dict[str, Any]
    file: FileInfo
    progress: float
    message: str | None = None
    attempts: int
    error: JobError | None = None
    result: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The job's webhook notification: None (none asked for), pending, delivered or failed.
    notification: str | None = None
    #: The job whose kept result this one took instead of running (None: it ran, or will).
    reused_from: str | None = None
    links: JobLinks

    @property
    def terminal(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class JobList(_Body):
    """One page of ``GET /v1/jobs``: pass ``next_cursor`` back for the next (``None``: the last)."""

    items: list[Job]
    next_cursor: str | None = None


class ProcessorInfo(_Body):
    """A processor the server offers: the content types it accepts and its params' JSON schema."""

    name: str
    description: str
    accepts: list[str]
    params_schema: dict[str, Any]


class ProcessorList(_Body):
    items: list[ProcessorInfo]


class Webhook(_Body):
    """A webhook endpoint of the caller's key. ``secret`` is whole only in the answers that make it
    (add, rotate); elsewhere it is masked (``whsec_abcd…``)."""

    id: str
    url: str
    events: list[str]
    description: str = ""
    enabled: bool
    disabled_reason: str | None = None
    failing_since: datetime | None = None
    secret: str
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = None


class WebhookList(_Body):
    items: list[Webhook]


class SigningSecret(_Body):
    """The key's default secret: it signs the deliveries to jobs' ``callback_url``."""

    secret: str
    previous_secret_expires_at: datetime | None = None
