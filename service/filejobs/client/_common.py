"""The pure half of both clients: what each call sends, and what each answer means.

:class:`~filejobs.client.sync.Client` and :class:`~filejobs.client.async_.AsyncClient` differ only
in how they send (and sleep); requests are described here as :class:`Call` values and answers are
turned into models or errors here, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from filejobs import __version__
from filejobs.client._multipart import text_form
from filejobs.client._retry import parse_retry_after
from filejobs.client._upload import Upload
from filejobs.client.errors import ProblemError, UnexpectedResponse, problem_class
from filejobs.client.models import (
    Job,
    JobList,
    ProcessorInfo,
    ProcessorList,
    SigningSecret,
    Webhook,
    WebhookList,
)

JOBS = "/v1/jobs"
USER_AGENT = f"filejobs-client/{__version__} httpx/{httpx.__version__}"
#: The longest long-poll the server grants (``?wait=``).
MAX_WAIT = 30.0
#: Extra read timeout on top of a long-poll's wait.
POLL_SLACK = 10.0
_DETAIL_CHARS = 500

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Call:
    """One API request. ``safe`` requests may be repeated after any transport failure (see
    :mod:`filejobs.client._retry`); ``wait`` widens the read timeout for a long-poll."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    safe: bool = True
    wait: float = 0.0


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json, application/problem+json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def job_path(job_id: str, *rest: str) -> str:
    if not job_id:
        raise ValueError("a job id must not be empty")
    return "/".join((JOBS, quote(job_id, safe=""), *rest))


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def get_call(job_id: str, *, wait: float = 0.0, etag: str | None = None) -> Call:
    params = {"wait": _seconds(wait)} if wait > 0 else {}
    headers = {"If-None-Match": etag} if etag else {}
    return Call("GET", job_path(job_id), params=params, headers=headers, wait=wait)


def list_call(*, status: str | None, processor: str | None, limit: int, cursor: str | None) -> Call:
    params = {"limit": str(limit)}
    for name, value in (("status", status), ("processor", processor), ("cursor", cursor)):
        if value is not None:
            params[name] = value
    return Call("GET", JOBS, params=params)


def result_call(job_id: str) -> Call:
    return Call("GET", job_path(job_id, "result"), headers={"Accept": "*/*"})


def cancel_call(job_id: str) -> Call:
    return Call("POST", job_path(job_id, "cancel"), safe=False)


def retry_call(job_id: str) -> Call:
    return Call("POST", job_path(job_id, "retry"), safe=False)


def delete_call(job_id: str) -> Call:
    return Call("DELETE", job_path(job_id))


def processors_call() -> Call:
    return Call("GET", "/v1/processors")


JSON_HEADERS = {"Content-Type": "application/json"}


def webhook_path(webhook_id: str, *rest: str) -> str:
    return "/".join(["/v1/webhooks", quote(webhook_id, safe=""), *rest])


def webhooks_call() -> Call:
    return Call("GET", "/v1/webhooks")


def add_webhook_call() -> Call:
    return Call("POST", "/v1/webhooks", headers=JSON_HEADERS, safe=False)


def remove_webhook_call(webhook_id: str) -> Call:
    return Call("DELETE", webhook_path(webhook_id))


def rotate_webhook_call(webhook_id: str) -> Call:
    return Call("POST", webhook_path(webhook_id, "rotate-secret"), safe=False)


def rotate_default_secret_call() -> Call:
    return Call("POST", "/v1/callback-secret", safe=False)


def webhook_body(url: str, events: list[str] | None, description: str) -> bytes:
    body: dict[str, Any] = {"url": url, "description": description}
    if events:
        body["events"] = events
    return json.dumps(body).encode()


def parse_webhook(response: httpx.Response) -> Webhook:
    return _model(response, Webhook)


def parse_webhooks(response: httpx.Response) -> list[Webhook]:
    return _model(response, WebhookList).items


def parse_secret(response: httpx.Response) -> SigningSecret:
    return _model(response, SigningSecret)


def submit_call(upload: Upload) -> Call:
    """The upload: safe to repeat because the ``Idempotency-Key`` names it."""
    headers = {"Content-Type": upload.framing.content_type, "Idempotency-Key": upload.key}
    length = upload.content_length
    if length is not None:
        headers["Content-Length"] = str(length)
    return Call("POST", JOBS, headers=headers)


def by_hash_call(upload: Upload) -> tuple[Call, bytes]:
    """The upload by hash: the form's fields with ``file_sha256``, ``file_name`` and ``file_size``
    and no file (428 when the server has not stored this content for the key: send the bytes)."""
    assert upload.sha256 is not None
    assert upload.size is not None
    fields = {
        **(upload.fields or {}),
        "file_sha256": upload.sha256,
        "file_name": upload.filename,
        "file_size": str(upload.size),
    }
    framing = text_form(fields)
    headers = {"Content-Type": framing.content_type, "Idempotency-Key": upload.key}
    return Call("POST", JOBS, headers=headers), framing.head + framing.tail


#: The most items ``POST /v1/jobs/by-hash`` takes in one request, and its largest body.
BY_HASH_ITEMS = 100
BY_HASH_BODY = 1024 * 1024
BY_HASH_PATH = f"{JOBS}/by-hash"


@dataclass(frozen=True)
class ByHash:
    """One file to submit by hash (:meth:`~filejobs.client.sync.Client.submit_many_by_hash`): its
    content's SHA-256, size and name, and the options of its job."""

    sha256: str
    size: int
    filename: str
    processor: str | None = None
    params: dict[str, Any] | None = None
    reuse: bool = True
    #: Called with the job's final status (signed with the key's default secret).
    callback_url: str | None = None
    #: This item's Idempotency-Key: with one on every item, a failed request is safely sent again.
    idempotency_key: str | None = None

    def item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"file_sha256": self.sha256, "file_size": self.size}
        item["file_name"] = self.filename
        if self.processor is not None:
            item["processor"] = self.processor
        if self.params is not None:
            item["params"] = self.params
        if not self.reuse:
            item["reuse"] = False
        if self.callback_url is not None:
            item["callback_url"] = self.callback_url
        if self.idempotency_key is not None:
            item["idempotency_key"] = self.idempotency_key
        return item


def by_hash_batches(files: list[ByHash]) -> list[tuple[Call, bytes, int]]:
    """``POST /v1/jobs/by-hash`` requests for ``files``, in order: each of at most
    :data:`BY_HASH_ITEMS` items and :data:`BY_HASH_BODY` bytes; the call, its body and its count."""
    batches: list[tuple[Call, bytes, int]] = []
    encoded: list[bytes] = []
    safe = True

    def flush() -> None:
        nonlocal encoded, safe
        if encoded:
            body = b'{"items":[' + b",".join(encoded) + b"]}"
            headers = {"Content-Type": "application/json"}
            batches.append((Call("POST", BY_HASH_PATH, headers=headers, safe=safe), body, len(encoded)))
        encoded, safe = [], True

    size = 0
    for file in files:
        item = json.dumps(file.item(), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        if len(item) + 16 > BY_HASH_BODY:
            raise ValueError(f"{file.filename!r}: its item is over {BY_HASH_BODY} bytes (params too large)")
        if len(encoded) == BY_HASH_ITEMS or size + len(item) + 16 > BY_HASH_BODY:
            flush()
            size = 0
        encoded.append(item)
        size += len(item) + 1
        safe = safe and file.idempotency_key is not None
    flush()
    return batches


def parse_by_hash(response: httpx.Response, count: int) -> list[Job | ProblemError]:
    """Each item's job, or its problem as the :class:`ProblemError` a single submit would raise
    (``428``: the server has not stored this content for the key, send the file with ``submit``)."""
    check(response)
    try:
        items = json.loads(response.content)["items"]
        if not isinstance(items, list) or len(items) != count:
            raise ValueError(f"{count} items sent, {len(items)} answered")
        return [_by_hash_item(item) for item in items]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url} answered {response.status_code} with a "
            f"body that is not one result per item: {exc}",
            status=response.status_code,
        ) from None


def _by_hash_item(item: dict[str, Any]) -> Job | ProblemError:
    status = int(item["status"])
    if status < 400:
        return Job.model_validate(item["job"])
    body = item.get("problem") or {}
    title, detail = str(body.get("title") or "Error"), str(body.get("detail") or "")
    retry_after = body.get("retry_after")
    return problem_class(status)(
        status,
        title,
        detail,
        body=body,
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
    )


def send_the_bytes(exc: ProblemError) -> bool:
    """True for the answer to an upload by hash of content the server has not stored for the key
    (428), and for a server that does not know uploads by hash (422 naming the field)."""
    return exc.status == 428 or (exc.status == 422 and "file_sha256" in exc.detail)


def build_request(http: httpx.Client | httpx.AsyncClient, call: Call, content: Any = None) -> httpx.Request:
    timeout: httpx.Timeout | None = None
    if call.wait > 0:
        base = http.timeout
        timeout = httpx.Timeout(
            connect=base.connect,
            read=None if base.read is None else base.read + call.wait + POLL_SLACK,
            write=base.write,
            pool=base.pool,
        )
    return http.build_request(
        call.method,
        call.path,
        params=call.params or None,
        headers=call.headers or None,
        content=content,
        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
    )


# ---- answers --------------------------------------------------------------------------------


def problem(response: httpx.Response) -> ProblemError:
    """The error for a 4xx/5xx answer (its body must have been read)."""
    status = response.status_code
    body: dict[str, Any] | None = None
    try:
        parsed = json.loads(response.content) if response.content else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        body = parsed
    title = body.get("title") if body else None
    detail = body.get("detail") if body else None
    if not isinstance(title, str) or not title:
        title = response.reason_phrase or "Error"
    if not isinstance(detail, str):
        detail = "" if body else response.text.strip()[:_DETAIL_CHARS]
    if body is None:
        body = {"status": status, "title": title, "detail": detail}
    cls = problem_class(status)
    return cls(
        status, title, detail, body=body, retry_after=parse_retry_after(response.headers.get("Retry-After"))
    )


def check(response: httpx.Response) -> None:
    """Raise the :class:`ProblemError` for an error status (the body must have been read)."""
    if response.status_code >= 400:
        raise problem(response)


def _model(response: httpx.Response, model: type[ModelT]) -> ModelT:
    check(response)
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url} answered {response.status_code} "
            f"with a body that is not a {model.__name__}: {exc.errors()[0]['msg'] if exc.errors() else exc}",
            status=response.status_code,
        ) from None


def parse_job(response: httpx.Response) -> Job:
    return _model(response, Job)


def parse_page(response: httpx.Response) -> JobList:
    return _model(response, JobList)


def parse_processors(response: httpx.Response) -> list[ProcessorInfo]:
    return _model(response, ProcessorList).items


def is_file_result(response: httpx.Response) -> bool:
    """A result is a file when it comes as an attachment (or is not JSON at all)."""
    if "content-disposition" in response.headers:
        return True
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return not (media == "application/json" or media.endswith("+json"))


def parse_json_result(response: httpx.Response) -> dict[str, Any]:
    check(response)
    try:
        value = json.loads(response.content)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UnexpectedResponse("the JSON result is not an object", status=response.status_code)
    return value


def expect_status(response: httpx.Response, *statuses: int) -> None:
    check(response)
    if response.status_code not in statuses:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url} answered {response.status_code}, "
            f"expected {' or '.join(map(str, statuses))}",
            status=response.status_code,
        )
