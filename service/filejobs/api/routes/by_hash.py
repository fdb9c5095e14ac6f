"""``POST /v1/jobs/by-hash``: many uploads by hash in one request.

A re-run of a batch (``filejobs submit`` over a folder the server has seen) makes one job per
file from content the key has stored already; one request per file is most of what such a re-run
costs (the client's and the server's work per request, not the job's). This takes up to
:data:`MAX_ITEMS` of them in one JSON body and answers each item as ``POST /v1/jobs`` with
``file_sha256`` and no file part would have: its job (``202``; ``200`` and ``replayed`` for an
``idempotency_key`` used before by the same request), or its problem (``428``: send the bytes,
with ``POST /v1/jobs``; ``422``, ``429``, ``409`` …). The answer is ``200`` with one result per
item, in order; a body that cannot be read as a whole (not JSON, too many items, a malformed
item) is one ``4xx`` and makes no job.

Each item is its own job with its own ``Idempotency-Key`` (``idempotency_key``): items are
independent, so one refused item does not stop the others. Their rows go through the group
commit together (one transaction, one fsync for the items committing at the same moment).
Every item counts against the key's rate limit as a request would (the request's own token is
the first item's); items past the key's tokens are answered ``429`` one by one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from filejobs.api.auth import CallerDep
from filejobs.api.deps import ServicesDep
from filejobs.api.json_body import json_body, json_body_docs
from filejobs.api.problems import problem_docs
from filejobs.errors import Problem, TooManyRequests, Unprocessable, UnsupportedMediaType
from filejobs.jobs import commands, idempotency
from filejobs.jobs.intake import Submitted, known_replays, replay_by_hash, submit_by_hash
from filejobs.models import JobPublic, job_public

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

#: The most items one request may carry.
MAX_ITEMS = 100
#: The largest body (100 items with a few KiB of params each).
MAX_BODY = 1024 * 1024
#: Items of one request worked on at once: each makes a few database round trips in threads, and
#: a request of 100 at once would take the process's whole thread pool (and more connections than
#: the pool keeps) from every other request.
ITEMS_AT_ONCE = 4


def _whole_number(value: Any) -> Any:
    """JSON's 12.0 is the integer 12 (JSON Schema says so); strict validation would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


FileSize = Annotated[
    int, BeforeValidator(_whole_number), Field(ge=1), WithJsonSchema({"type": "integer", "minimum": 1})
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=f"^{idempotency.KEY_PATTERN.pattern}$")
]


class ByHashItem(BaseModel):
    """One upload by hash: the fields of a ``POST /v1/jobs`` form without its file part."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON's types: no "1" for 1, no 0 for false

    file_sha256: Sha256 = Field(description="The content's SHA-256 (64 hex digits).")
    file_size: FileSize | None = Field(
        default=None, description="The content's size in bytes; checked against the stored file's."
    )
    file_name: str | None = Field(
        default=None, max_length=1024, description="The job's file name (default: 'upload')."
    )
    processor: str | None = Field(default=None, max_length=255, description="Default: inspect.")
    params: dict[str, Any] | None = Field(default=None, description="The processor's params.")
    reuse: bool = Field(default=True, description="false: a fresh run, no reuse of a kept result.")
    callback_url: str | None = Field(default=None, max_length=2048)
    idempotency_key: IdempotencyKey | None = Field(
        default=None, description="This item's Idempotency-Key (as the header of POST /v1/jobs)."
    )

    def fields(self) -> dict[str, str]:
        """The item as the form fields of ``POST /v1/jobs``."""
        fields = {"file_sha256": self.file_sha256.lower()}
        if self.file_size is not None:
            fields["file_size"] = str(self.file_size)
        if self.file_name is not None:
            fields["file_name"] = self.file_name
        if self.processor is not None:
            fields["processor"] = self.processor
        if self.params is not None:
            fields["params"] = json.dumps(self.params, ensure_ascii=False)
        if not self.reuse:
            fields["reuse"] = "false"
        if self.callback_url is not None:
            fields["callback_url"] = self.callback_url
        return fields


class ByHashRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[ByHashItem] = Field(min_length=1, max_length=MAX_ITEMS)


class ByHashResult(BaseModel):
    """One item's answer: ``status`` is what ``POST /v1/jobs`` would have answered for it."""

    status: int = Field(description="202 (a new job), 200 (replayed: its Idempotency-Key's job), or 4xx.")
    job: JobPublic | None = Field(default=None, description="The job (status 200 and 202).")
    replayed: Literal[True] | None = Field(
        default=None, description="True when the job is the one this item's idempotency_key made before."
    )
    problem: dict[str, Any] | None = Field(
        default=None,
        description="The problem details (status 4xx); 428 with send_file: send the file with POST /v1/jobs.",
    )


class ByHashAnswer(BaseModel):
    items: list[ByHashResult] = Field(description="One result per item, in the order of the request.")


@router.post(
    "/by-hash",
    response_model=ByHashAnswer,
    summary="Make many jobs from content this key has stored (uploads by hash), one result per item",
    openapi_extra=json_body_docs(ByHashRequest),
    responses={
        200: {"description": "One result per item: its job (202, or 200 when replayed) or its problem."},
        **problem_docs(400, 401, 413, 415, 422, 429),
    },
)
async def submit_many_by_hash(
    request: Request, services: ServicesDep, caller: CallerDep, background: BackgroundTasks
) -> Response:
    """Up to 100 items (``413`` past 1 MiB, ``422`` past 100 items, for a malformed item, or for
    an ``idempotency_key`` given twice); each item answered as ``POST /v1/jobs`` by hash."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("Send the items as a JSON body (Content-Type: application/json).")
    body = await json_body(request, ByHashRequest, max_bytes=MAX_BODY)
    keys = [item.idempotency_key for item in body.items if item.idempotency_key is not None]
    if len(keys) != len(set(keys)):
        raise Unprocessable("Each item needs its own idempotency_key: one is given twice.")
    owner = caller.scope
    allowed = len(body.items)
    if caller.key_id is not None:  # the request's own token was the first item's
        allowed = 1 + services.rate_limiter.take(owner, len(body.items) - 1)

    at_once = asyncio.Semaphore(ITEMS_AT_ONCE)
    replays = await known_replays(services, owner, keys)  # a re-run: mostly replays, read at once

    async def one(index: int, item: ByHashItem) -> ByHashResult:
        async with at_once:
            return await _one(index, item)

    async def _one(index: int, item: ByHashItem) -> ByHashResult:
        if index >= allowed:
            wait = services.rate_limiter.retry_after(owner)
            return _problem(
                TooManyRequests(
                    f"Rate limit of {services.rate_limiter.rate:g} requests per second for this key "
                    "exceeded (each item counts as a request).",
                    headers={"Retry-After": str(wait)},
                )
            )
        known = replays.get(item.idempotency_key) if item.idempotency_key is not None else None
        if known is not None and (replayed := replay_by_hash(services, item.fields(), known)) is not None:
            return _answer(replayed)  # the same request again: its job, read with the others'
        try:
            submitted = await submit_by_hash(
                services=services, owner=owner, fields=item.fields(), idempotency_key=item.idempotency_key
            )
        except Problem as exc:
            return _problem(exc)
        if not submitted.replayed:
            background.add_task(
                commands.dispatch, hub=services.hub, dispatcher=services.dispatcher, job_id=submitted.job.id
            )
        return _answer(submitted)

    results = await asyncio.gather(*(one(index, item) for index, item in enumerate(body.items)))
    answer = ByHashAnswer(items=list(results))
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


@router.api_route(
    "/by-hash", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False
)
async def by_hash_other_methods() -> Response:
    """405 (Allow: POST), not the ``/v1/jobs/{job_id}`` routes: ``by-hash`` is no job's id."""
    raise StarletteHTTPException(405)


def _answer(submitted: Submitted) -> ByHashResult:
    job = job_public(submitted.job)
    if submitted.replayed:
        return ByHashResult(status=200, job=job, replayed=True)
    return ByHashResult(status=202, job=job)


def _problem(exc: Problem) -> ByHashResult:
    body = exc.body()
    if "Retry-After" in exc.headers:
        body.setdefault("retry_after", int(exc.headers["Retry-After"]))
    return ByHashResult(status=exc.status, problem=body)
