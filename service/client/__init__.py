"""The Python client of filejobs: :class:`Client` (sync) and :class:`AsyncClient`, on httpx.

::

    from service.client import Client

    with Client("http://127.0.0.1:8000") as client:
        job = client.submit("report.pdf", processor="pdf-text")
        job = client.wait(job.id, timeout=600)
        client.result(job.id, to="out/")

Errors are described in :mod:`service.client.errors`; retries in :mod:`service.client._retry`.
"""

from service.client._retry import Retrying
from service.client.async_ import AsyncClient
from service.client.errors import (
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
from service.client.idempotency import file_sha256, idempotency_key
from service.client.models import (
    TERMINAL_STATUSES,
    FileInfo,
    Job,
    JobError,
    JobLinks,
    JobList,
    ProcessorInfo,
)
from service.client.settings import ClientSettings
from service.client.sync import Client

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncClient",
    "BadRequest",
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
