"""Every error the service answers with, as RFC 9457 problem details.

``Problem`` is the root; each subclass fixes a status and a title. They become
``application/problem+json`` through the exception handlers of :mod:`filejobs.api.problems`
(``install_handlers``, installed by :func:`filejobs.app.create_app`; they also render FastAPI's own
validation and HTTP errors), through that module's ``problem_response`` where a middleware answers
before routing (:mod:`filejobs.api.fast_upload`), and in :mod:`filejobs.http_protocol` itself for the
``408``/``431`` of a request head, before any application.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://filejobs.dev/problems/"

#: The title of each status's one problem type, where it differs from Python's reason phrase
#: (the type is the title, lower-case and hyphenated: ``…/unprocessable-content``).
_TITLES = {
    413: "Payload Too Large",
    460: "Checksum Mismatch",  # tus 1.0 checksum extension
    422: "Unprocessable Content",
    500: "Internal Server Error",
}


def status_title(status: int) -> str:
    """The title of the problem type of ``status``."""
    if status in _TITLES:
        return _TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_type(status: int) -> str:
    """The one problem ``type`` of ``status``: every answer with that status has it."""
    return TYPE_BASE + status_title(status).lower().replace(" ", "-")


class Problem(Exception):
    """An error answered to the client. ``detail`` must never hold a server path or a trace.

    The ``type`` follows from the status alone (one type per status, whatever raised it); a
    subclass or a caller may give a more specific ``title``."""

    status: int = 500
    title: str = ""

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        title: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        if status is not None:
            self.status = status
        self.title = title or self.title or status_title(self.status)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": problem_type(self.status),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status = 400


class MalformedMultipart(BadRequest):
    title = "Malformed multipart body"


class Unauthorized(Problem):
    status = 401


class NotFound(Problem):
    status = 404


class RequestTimeout(Problem):
    status = 408


class Conflict(Problem):
    status = 409


class Gone(Problem):
    status = 410


class PreconditionFailed(Problem):
    status = 412


class PreconditionRequired(Problem):
    """428: the request needs what it left out (an upload by hash of content not stored: the file)."""

    status = 428


class Locked(Problem):
    status = 423


class ChecksumMismatch(Problem):
    """tus's 460: a chunk whose ``Upload-Checksum`` does not match its bytes."""

    status = 460


class PayloadTooLarge(Problem):
    status = 413


class HeaderFieldsTooLarge(Problem):
    status = 431


class UnsupportedMediaType(Problem):
    status = 415


class Unprocessable(Problem):
    status = 422


class TooManyRequests(Problem):
    status = 429


class InsufficientStorage(Problem):
    status = 507


class ServiceUnavailable(Problem):
    status = 503


class ClientGone(Exception):
    """The client disconnected mid-request: nothing to answer, everything to clean up."""
