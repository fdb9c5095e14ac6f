"""Every error the client raises, in one hierarchy.

::

    FilejobsError                   the root: catch this to catch everything below
    ├── ProblemError                the server answered 4xx or 5xx (RFC 9457 problem details)
    │   ├── BadRequest              400  a malformed request or upload
    │   ├── Unauthorized            401  missing or wrong API key
    │   ├── Forbidden               403
    │   ├── NotFound                404  no such job (or its output file is gone)
    │   ├── Conflict                409  e.g. the result of an unfinished job, cancelling a finished one
    │   ├── PayloadTooLarge         413  the file is over the server's limit
    │   ├── UnsupportedMediaType    415  the processor does not accept the file's type
    │   ├── Unprocessable           422  unknown processor, invalid params (``.errors``), empty file
    │   ├── TooManyRequests         429  still refused after every retry
    │   └── ServerError             5xx
    │       └── ServiceUnavailable  503  still unavailable after every retry
    ├── TransportError              no answer at all (refused, reset, timed out) after every retry
    ├── UnexpectedResponse          an answer outside the contract (e.g. a 200 that is not a job)
    ├── UploadError                 the file cannot be uploaded as given (changed size while sending)
    └── WaitTimeout                 ``wait()`` ran out of time before the job finished

A :class:`TransportError` keeps the underlying :mod:`httpx` exception as ``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from filejobs.client.models import Job


class FilejobsError(Exception):
    """The base of every error raised by :mod:`filejobs.client`."""


class ProblemError(FilejobsError):
    """The server answered with an error status.

    ``body`` is the ``application/problem+json`` document (``type``, ``title``, ``status``,
    ``detail`` and any extra members); for a body that is not JSON it is
    ``{"status": ..., "title": <reason phrase>, "detail": <the start of the text>}``.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.body: dict[str, Any] = body if body is not None else {"status": status, "title": title}
        #: Seconds the server asked to wait (``Retry-After``), if it said.
        self.retry_after = retry_after

    @property
    def type(self) -> str | None:
        value = self.body.get("type")
        return value if isinstance(value, str) else None

    @property
    def errors(self) -> list[Any]:
        """Per-field validation errors (``422`` for invalid params); empty when there are none."""
        value = self.body.get("errors")
        return value if isinstance(value, list) else []


class BadRequest(ProblemError):
    pass


class Unauthorized(ProblemError):
    pass


class Forbidden(ProblemError):
    pass


class NotFound(ProblemError):
    pass


class Conflict(ProblemError):
    pass


class PayloadTooLarge(ProblemError):
    pass


class UnsupportedMediaType(ProblemError):
    pass


class Unprocessable(ProblemError):
    pass


class TooManyRequests(ProblemError):
    pass


class ServerError(ProblemError):
    pass


class ServiceUnavailable(ServerError):
    pass


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def problem_class(status: int) -> type[ProblemError]:
    """The most specific :class:`ProblemError` subclass for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ProblemError


class TransportError(FilejobsError):
    """The request got no answer (connection refused or reset, a timeout, a broken response),
    even after retrying. ``attempts`` counts the tries; ``__cause__`` is the httpx exception."""

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class UnexpectedResponse(FilejobsError):
    """A success status whose body is not what the HTTP contract promises."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class UploadError(FilejobsError):
    """The file could not be sent as given (it changed size while uploading)."""


class WaitTimeout(FilejobsError):
    """``wait()`` gave up before the job reached a terminal status. ``job`` is the last state seen."""

    def __init__(self, job_id: str, timeout: float, job: Job | None = None) -> None:
        status = f" (still {job.status})" if job is not None else ""
        super().__init__(f"job {job_id} did not finish within {timeout:g} s{status}")
        self.job_id = job_id
        self.timeout = timeout
        self.job = job
