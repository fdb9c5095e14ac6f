"""Every error the service answers with, as RFC 9457 problem details.

``Problem`` is the root; each subclass fixes a status and a title. Handlers in :mod:`service.app`
turn them (and FastAPI's own validation and HTTP errors) into ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error answered to the client. ``detail`` must never hold a server path or a trace."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"

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
        if title is not None:
            self.title = title
            self.slug = title.lower().replace(" ", "-")

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://filejobs.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status, title, slug = 400, "Bad Request", "bad-request"


class MalformedMultipart(BadRequest):
    title, slug = "Malformed multipart body", "malformed-multipart"


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class NotFound(Problem):
    status, title, slug = 404, "Not Found", "not-found"


class RequestTimeout(Problem):
    status, title, slug = 408, "Request Timeout", "request-timeout"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(Problem):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(Problem):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Unprocessable(Problem):
    status, title, slug = 422, "Unprocessable Content", "unprocessable"


class TooManyRequests(Problem):
    status, title, slug = 429, "Too Many Requests", "too-many-requests"


class InsufficientStorage(Problem):
    status, title, slug = 507, "Insufficient Storage", "insufficient-storage"


class ServiceUnavailable(Problem):
    status, title, slug = 503, "Service Unavailable", "unavailable"


class ClientGone(Exception):
    """The client disconnected mid-request: nothing to answer, everything to clean up."""
