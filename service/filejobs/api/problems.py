"""Problem-details answers: handlers for our errors and FastAPI's, and their OpenAPI docs."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from filejobs.api.security_headers import secured
from filejobs.errors import PROBLEM_JSON, Problem, status_title

log = logging.getLogger(__name__)


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem.body(instance), status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def _generic(status: int, detail: str, **extra: Any) -> Problem:
    return Problem(detail, status=status, **extra)


def unexpected_response(request: Request) -> Response:
    """The answer to an error nobody expected, logged (with the exception being handled): a
    problem+json ``500`` with the security headers, naming nothing of the error. The app's handler
    answers it outside the ``SecurityHeaders`` middleware, and the upload's fast path before it."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    response = problem_response(_generic(500, "The server failed to handle this request."), request)
    return secured(response, request.url.path)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return problem_response(_generic(422, "The request is not valid.", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem_response(_generic(exc.status_code, str(exc.detail)), request)
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:  # every method of every route on this path (RFC 9110 §15.5.6)
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_response(request)  # by Starlette's outermost middleware


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI schema has for the request's path (whatever routes serve them). A
    concrete path is matched before the templated ones (OpenAPI's rule): ``/v1/jobs/by-hash`` is
    not ``/v1/jobs/{job_id}``."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    path = request.url.path
    if path in paths:
        matched = [paths[path]]
    else:
        matched = [
            operations
            for template, operations in paths.items()
            if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path)
        ]
    methods = {method.upper() for operations in matched for method in operations}
    if "GET" in methods:
        methods.add("HEAD")  # filejobs.api.head answers it
    return sorted(methods)


def problem_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem answers."""
    descriptions = {
        400: "Malformed request (for uploads: malformed or truncated multipart, bad Content-Length, "
        "an invalid Idempotency-Key).",
        401: "No API key, or one that is unknown or revoked (with WWW-Authenticate).",
        404: "No such job (or another key's job).",
        408: "An upload's body sent nothing for UPLOAD_IDLE_TIMEOUT (the connection is closed).",
        409: "The job is not in a state that allows this; for an upload, a request with the same "
        "Idempotency-Key is still in progress (with Retry-After).",
        410: "The stored file is gone (deleted from the storage behind the service's back).",
        416: "The Range is outside the file (with Content-Range: bytes */size).",
        413: "The file, a form field, or the number of parts is over the limit.",
        415: "Not multipart/form-data, or the processor does not accept this file type.",
        422: "Invalid parameters (for uploads: missing or empty file, a 'file' part that is not a file, "
        "an unknown form field, unknown processor, bad params, an Idempotency-Key used for a "
        "different request).",
        428: "An upload by hash ('file_sha256' and no file) of content this key has not stored: "
        "send the file itself.",
        429: "Over the key's rate limit, unfinished-job limit or share of event streams (with Retry-After).",
        503: "Not ready, or the queue is too deep, or (for an upload) the server is shutting down or "
        "the file storage (a bucket) is unavailable (with Retry-After).",
        507: "Not enough free disk space for the file (with Retry-After when refused up front).",
    }
    return {
        status: {
            "description": descriptions.get(status, status_title(status)),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for status in statuses
    }
