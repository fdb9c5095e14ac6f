"""The Python client of filejobs: :class:`Client` (sync) and :class:`AsyncClient`, on httpx.

::

    from filejobs.client import Client

    with Client("http://127.0.0.1:8000") as client:
        job = client.submit("report.pdf", processor="pdf-text")
        job = client.wait(job.id, timeout=600)
        client.result(job.id, to="out/")

Errors are described in :mod:`filejobs.client.errors`; retries in :mod:`filejobs.client._retry`.
"""

from filejobs.client._common import ByHash
from filejobs.client._retry import Retrying
from filejobs.client.async_ import AsyncClient
from filejobs.client.errors import (
    BadRequest,
    Conflict,
    FilejobsError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
    UnsupportedMediaType,
    UploadError,
    WaitTimeout,
)
from filejobs.client.idempotency import file_sha256, idempotency_key
from filejobs.client.models import (
    TERMINAL_STATUSES,
    FileInfo,
    Job,
    JobError,
    JobLinks,
    JobList,
    ProcessorInfo,
)
from filejobs.client.settings import ClientSettings
from filejobs.client.sync import Client

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncClient",
    "BadRequest",
    "ByHash",
    "Client",
    "ClientSettings",
    "Conflict",
    "FileInfo",
    "FilejobsError",
    "Forbidden",
    "Job",
    "JobError",
    "JobLinks",
    "JobList",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "ProcessorInfo",
    "Retrying",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "Unprocessable",
    "UnsupportedMediaType",
    "UploadError",
    "WaitTimeout",
    "file_sha256",
    "idempotency_key",
]
