"""Creating a job from an upload: validate the form, commit the file, insert the row.

The order is what makes a 202 safe to give: the file is fsynced and renamed into place (or its
object completed in the bucket), then the row commits, then (in the caller of
:func:`filejobs.jobs.intake.submit_upload`) the answer goes out, then the id is dispatched. If the
process dies after the rename but before the commit, the sweeper finds a file with no row and
removes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from anyio import to_thread
from pydantic import BaseModel, SecretStr, ValidationError
from sqlmodel import Session

from filejobs import client_json
from filejobs.db import Database
from filejobs.errors import Conflict, InsufficientStorage, Unprocessable, UnsupportedMediaType
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.jobs.group_commit import GroupCommitter
from filejobs.jobs.idempotency import Claim, Existing, complete, fingerprint
from filejobs.models import Job, JobStatus, new_job, utcnow
from filejobs.processors.registry import Entry, Registry
from filejobs.settings import Settings
from filejobs.shutdown import Shutdown
from filejobs.storage import Storage
from filejobs.uploads import (
    DISK_FULL,
    Limits,
    ReceivedFile,
    commit_or_abort,
    receive_upload,
    unknown_fields,
)
from filejobs.webhooks import endpoints

DEFAULT_PROCESSOR = "inspect"
KNOWN_FIELDS = frozenset({"processor", "params", "callback_url"})


@dataclass(frozen=True)
class IdempotencyPlan:
    """What ``begin`` said about this request's Idempotency-Key: ours to use, or used before."""

    claim: Claim | None = None
    existing: Existing | None = None


@dataclass(frozen=True)
class Submission:
    entry: Entry
    params: BaseModel


def validate_fields(registry: Registry, fields: Mapping[str, str]) -> Submission:
    """The processor and its params from the form fields, or 422 saying what is wrong."""
    unknown = set(fields) - KNOWN_FIELDS
    if unknown:
        raise unknown_fields(unknown, KNOWN_FIELDS)
    name = fields.get("processor") or DEFAULT_PROCESSOR
    entry = registry.get(name)
    if entry is None:
        raise Unprocessable(
            f"Unknown processor {name!r}. Available: {', '.join(registry.names())}.",
            processors=registry.names(),
        )
    raw = fields.get("params") or "{}"
    try:
        params = client_json.loads(raw)
    except client_json.ClientJSONError as exc:
        raise Unprocessable(f"'params' {exc}.") from None
    if not isinstance(params, dict):
        raise Unprocessable("'params' must be a JSON object.")
    try:
        model = entry.processor.Params.model_validate(params)
    except ValidationError as exc:
        errors = [
            {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise Unprocessable(f"Invalid params for processor {name!r}.", errors=errors) from None
    return Submission(entry=entry, params=model)


def validate_early_fields(registry: Registry, fields: Mapping[str, str]) -> None:
    """The fields sent before the file: refuse now what cannot pass later. ``params`` waits for
    ``processor`` when that is still to come (after the file), as it is checked against it."""
    if "processor" not in fields:
        fields = {name: value for name, value in fields.items() if name != "params"}
    validate_fields(registry, fields)


def split_secrets(params: BaseModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params as shown in the job body (``SecretStr`` fields masked) and the secret values."""
    public: dict[str, Any] = params.model_dump(mode="json")
    secret = {
        name: value.get_secret_value()
        for name in type(params).model_fields
        if isinstance(value := getattr(params, name), SecretStr)
    }
    return public, secret


async def check_callback(*, db: Database, settings: Settings, owner: str, url: str) -> None:
    """422 unless ``url`` may be called (https, public addresses: as webhook URLs) and the key has
    a default secret to sign it with (``POST /v1/callback-secret``)."""
    policy = endpoints.UrlPolicy(
        allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
    )
    try:
        await to_thread.run_sync(partial(endpoints.check_url, url, policy), abandon_on_cancel=True)
    except Unprocessable as exc:
        raise Unprocessable(exc.detail.replace("'url'", "'callback_url'", 1)) from None
    if await to_thread.run_sync(partial(endpoints.default_secret, db, owner=owner)) is None:
        raise Unprocessable(
            "'callback_url' needs the key's default signing secret: make it once with "
            "POST /v1/callback-secret (or `filejobs webhooks rotate --default`)."
        )


async def create_job(
    *,
    db: Database,
    storage: Storage,
    registry: Registry,
    settings: Settings,
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    owner: str = "",
    idempotency: IdempotencyPlan | None = None,
    committer: GroupCommitter | None = None,
    shutdown: Shutdown | None = None,
) -> Job | Existing:
    """Receive the upload and record a queued job of ``owner``. Leaves no file and no row on any
    failure. With an ``Idempotency-Key`` used before, returns its :class:`Existing` record (the
    same request: a replay) or raises 422 (a different one) instead, keeping nothing of this
    upload. A ``committer`` inserts the row together with those of other uploads finishing at the
    same moment (one fsync for all). Uploads still receiving at the cutoff of a ``shutdown`` are
    answered 503."""
    limits = Limits(
        max_file_bytes=settings.max_upload_bytes,
        max_fields=settings.max_fields,
        max_field_bytes=settings.max_field_bytes,
    )
    received = await receive_upload(
        headers=headers,
        body=body,
        open_sink=storage.open_upload,
        limits=limits,
        check_fields=lambda fields: validate_early_fields(registry, fields),
        field_names=KNOWN_FIELDS,
        idle_timeout=settings.upload_idle_timeout,
        shutdown=shutdown,
    )
    return await record_job(
        db=db,
        storage=storage,
        registry=registry,
        settings=settings,
        received=received,
        owner=owner,
        idempotency=idempotency,
        committer=committer,
    )


async def record_job(
    *,
    db: Database,
    storage: Storage,
    registry: Registry,
    settings: Settings,
    received: ReceivedFile,
    owner: str = "",
    idempotency: IdempotencyPlan | None = None,
    committer: GroupCommitter | None = None,
    job_id: str | None = None,
) -> Job | Existing:
    """Validate a received file's fields and type, commit the file and insert the queued job's row
    (as :func:`create_job` after the body is in; a finished resumable upload comes here directly).
    ``job_id`` (default: a new one) lets a caller that must make exactly one job name it first."""
    try:
        submission = validate_fields(registry, received.fields)
        processor = submission.entry.processor
        if not processor.accepts_type(received.content_type):
            raise UnsupportedMediaType(
                f"Processor {processor.name!r} does not accept {received.content_type} files "
                f"(accepts: {', '.join(processor.accepts)}).",
                content_type=received.content_type,
                accepts=list(processor.accepts),
            )
        public, secret = split_secrets(submission.params)
        callback_url = received.fields.get("callback_url") or None
        if callback_url is not None:
            await check_callback(db=db, settings=settings, owner=owner, url=callback_url)
        request_print = ""
        if idempotency is not None:
            request_print = fingerprint(
                processor=processor.name,
                params={**public, **secret},
                sha256=received.sha256,
                size=received.size,
                name=received.name,
            )
            if idempotency.existing is not None and request_print != idempotency.existing.fingerprint:
                raise Unprocessable(
                    "This Idempotency-Key was used for a different request (another file or other "
                    "options); use a new key for a new request."
                )
    except BaseException:
        await received.sink.abort()
        raise
    if idempotency is not None and idempotency.existing is not None:
        await received.sink.abort()  # the same request again: its first job is the answer
        return idempotency.existing

    # A caller that must make exactly one job names it (a finished resumable upload); an object
    # store named its object when the upload began; else a new id.
    job_id = job_id or received.sink.job_id or new_job_id()
    key = storage.upload_key(job_id)
    place = received.sink.placer(key) if committer is not None else None
    if place is None:  # no group commit, or a sink that must complete before the row (S3)
        await commit_or_abort(received.sink, key)
    now = utcnow()
    job = new_job(
        id=job_id,
        owner=owner,
        status=JobStatus.queued.value,
        processor=submission.entry.processor.name,
        params=public,
        secret_params=secret or None,
        file_name=received.name,
        file_size=received.size,
        file_sha256=received.sha256,
        file_content_type=received.content_type,
        declared_content_type=(received.declared_content_type or "")[:255] or None,
        storage_key=key,
        max_attempts=settings.max_attempts,
        callback_url=callback_url,
        created_at=now,
        updated_at=now,
        run_after=now,
    )
    claim = idempotency.claim if idempotency is not None else None

    def complete_key(session: Session) -> None:
        if claim is not None and not complete(session, claim, job_id=job_id, fingerprint=request_print):
            raise Conflict("Another request took this Idempotency-Key over while this one was uploading.")

    try:
        if committer is not None:
            # The committer moves the file into place, fsyncs uploads/ once for all the uploads
            # it commits together, then inserts their rows in one transaction.
            await committer.insert(
                job,
                before_commit=complete_key if claim is not None else None,
                place=place,
            )
        else:
            await to_thread.run_sync(partial(repository.insert_job, db, job, before_commit=complete_key))
    except BaseException as exc:
        await received.sink.abort()  # an object store's sink deletes the object it completed
        if received.sink.job_id is None:  # a local file, moved into place by the commit
            storage.delete(key)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise InsufficientStorage("The server has no room for this file right now.") from None
        raise
    return job
