"""Creating a job from an upload: validate the form, commit the file, insert the row.

The order is what makes a 202 safe to give: the file is fsynced and renamed into place (or its
object completed in the bucket), then the row commits, then (in the caller of
:func:`filejobs.jobs.intake.submit_upload`) the answer goes out, then the id is dispatched. If the
process dies after the rename but before the commit, the sweeper finds a file with no row and
removes it.

In the row's transaction the job's file is linked to its owner's content
(:func:`filejobs.jobs.files.link`): content the owner has stored already is shared (this upload's
own bytes are deleted after the commit) and a kept succeeded job with the same file, processor,
processor version and params gives its result at once (result reuse). An upload by hash
(``file_sha256`` and no file part) stores nothing: it is answered 428 unless the owner has the
content.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from anyio import to_thread
from pydantic import BaseModel, SecretStr, ValidationError
from sqlmodel import Session

from filejobs import client_json, metrics
from filejobs.db import Database
from filejobs.errors import (
    Conflict,
    InsufficientStorage,
    PreconditionRequired,
    Unprocessable,
    UnsupportedMediaType,
)
from filejobs.ids import new_job_id
from filejobs.jobs import files, inline_uploads, repository
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
from filejobs.webhooks.outbox import record_job_event

log = logging.getLogger(__name__)

DEFAULT_PROCESSOR = "inspect"
KNOWN_FIELDS = frozenset(
    {"processor", "params", "callback_url", "reuse", "file_sha256", "file_name", "file_size"}
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FLAGS = {"true": True, "1": True, "false": False, "0": False}


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
    if "reuse" in fields and fields["reuse"].strip().lower() not in _FLAGS:
        raise Unprocessable("'reuse' must be true or false.")
    sha256 = fields.get("file_sha256")
    if sha256 is not None and not _SHA256.fullmatch(sha256.strip().lower()):
        raise Unprocessable("'file_sha256' must be the file's SHA-256: 64 hexadecimal digits.")
    raw = fields.get("params") or "{}"
    try:
        params = {} if raw == "{}" else client_json.loads(raw)  # no params: no JSON decoder made
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


def validate_early_fields(registry: Registry, fields: Mapping[str, str]) -> Submission | None:
    """The fields sent before the file: refuse now what cannot pass later. ``params`` waits for
    ``processor`` when that is still to come (after the file), as it is checked against it.
    The :class:`Submission` of these fields when all of them were checked (None when ``params``
    waits): when no field follows the file, it is the form's and need not be made again."""
    if "processor" not in fields and "params" in fields:
        fields = {name: value for name, value in fields.items() if name != "params"}
        validate_fields(registry, fields)
        return None
    return validate_fields(registry, fields)


def request_fingerprint(processor: str, params: dict[str, Any], received: ReceivedFile) -> str:
    """The Idempotency-Key print of a request for ``processor`` with ``params`` (public and secret)
    on ``received`` (an upload by hash: its size is the stored file's once the intake checked it)."""
    return fingerprint(
        processor=processor,
        params=params,
        sha256=received.sha256.strip().lower(),
        size=received.size,
        name=received.name,
        callback_url=received.fields.get("callback_url") or None,
    )


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
        submission = received.checked
        if not isinstance(submission, Submission):  # fields after the file, or none before it
            submission = validate_fields(registry, received.fields)
        processor = submission.entry.processor
        received = await _check_content(db, received, owner)
        if not processor.accepts_type(received.content_type):
            raise UnsupportedMediaType(
                f"Processor {processor.name!r} does not accept {received.content_type} files "
                f"(accepts: {', '.join(processor.accepts)}).",
                content_type=received.content_type,
                accepts=list(processor.accepts),
            )
        public, secret = split_secrets(submission.params)
        all_params = {**public, **secret}
        callback_url = received.fields.get("callback_url") or None
        if callback_url is not None:
            await check_callback(db=db, settings=settings, owner=owner, url=callback_url)
        request_print = ""
        if idempotency is not None:
            request_print = request_fingerprint(processor.name, all_params, received)
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
    # A small file held in memory is committed by the group committer with its row: as a row of
    # its own in the same transaction (inline_uploads.py) when it is small enough, else as a file.
    held = committer is not None and received.stored and received.sink.held
    inline_data = received.sink.held_bytes if held else None
    if inline_data is not None and len(inline_data) > settings.inline_upload_bytes:
        inline_data = None
    if inline_data is not None:
        key = inline_uploads.key_for(job_id)
        place = None
    else:
        key = storage.upload_key(job_id)
        place = received.sink.placer(key) if committer is not None and received.stored else None
        if place is None and received.stored:  # no group commit, or a sink that must complete first (S3)
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
        processor_version=processor.version,
        params_digest=files.params_digest(all_params),
    )
    claim = idempotency.claim if idempotency is not None else None
    reuse = (
        settings.reuse
        and processor.reusable
        and _FLAGS.get(received.fields.get("reuse", "true").strip().lower(), True)
    )
    linked: list[files.Linked] = []
    # A small file held in memory whose content its owner has (as far as this process saw) is
    # not written at all: the job links the stored content as an upload by hash does (NotStored,
    # if it went meanwhile: then it is recorded with its bytes, below). See known_content.py.
    skip = held and committer is not None and (owner, received.sha256) in committer.known

    def prepare(session: Session, values: dict[str, Any]) -> None:
        stored = received.stored and not skip
        linked.append(files.link(session, values, stored=stored, reuse=reuse, now=now))
        if stored and inline_data is not None and values["storage_key"] == key:  # new content
            inline_uploads.insert_blob(session, key, inline_data)

    def before_commit(session: Session) -> None:
        if claim is not None and not complete(session, claim, job_id=job_id, fingerprint=request_print):
            raise Conflict("Another request took this Idempotency-Key over while this one was uploading.")
        if linked and linked[-1].reused_from is not None:  # finished at once: the finish's webhooks
            record_job_event(session, job_id, max_pending=settings.webhook_max_pending)

    # A savepoint of its own only where this job alone may fail after a write: its
    # Idempotency-Key taken over (409). The content of an upload by hash gone meanwhile (428)
    # fails it before it wrote anything (NothingWritten): no savepoint needed.
    isolated = claim is not None
    try:
        if skip:
            assert committer is not None
            try:
                await committer.insert(job, before_commit=before_commit, prepare=prepare, isolated=isolated)
            except files.NotStored:  # deleted since: write the bytes after all
                committer.known.forget(owner, received.sha256)
                skip = False
        if skip:
            pass  # recorded without its bytes
        elif committer is not None:
            # The committer moves the file into place, fsyncs uploads/ once for all the uploads
            # it commits together, then inserts their rows in one transaction.
            await committer.insert(
                job, before_commit=before_commit, prepare=prepare, isolated=isolated, place=place
            )
        else:
            await to_thread.run_sync(
                partial(repository.insert_job, db, job, before_commit=before_commit, prepare=prepare)
            )
    except BaseException as exc:
        await received.sink.abort()  # an object store's sink deletes the object it completed
        if received.sink.job_id is None and received.stored and not skip and inline_data is None:
            storage.delete(key)  # a local file, moved into place (a blob went with the transaction)
        if isinstance(exc, files.NotStored):
            raise _send_the_bytes() from None
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise InsufficientStorage("The server has no room for this file right now.") from None
        raise
    if committer is not None:
        committer.known.add(owner, job.file_sha256)
    if skip or inline_data is not None:  # its bytes were never written (or are a row): drop them
        await received.sink.abort()
    if skip:
        metrics.STORED_BYTES_SHARED.inc(job.file_size)
    return await _linked(db, storage, job, linked[-1], stored=received.stored)


def _send_the_bytes() -> PreconditionRequired:
    return PreconditionRequired(
        "No file with this 'file_sha256' is stored for this key: send the file itself in the "
        "'file' field (with the same fields).",
        send_file=True,
    )


async def _check_content(db: Database, received: ReceivedFile, owner: str) -> ReceivedFile:
    """The upload's ``file_sha256`` (and ``file_size``) checked against its bytes (422 when they
    differ); an upload by hash completed from the owner's stored content (428 when there is none)."""
    claimed = received.fields.get("file_sha256")
    if received.stored:
        if claimed is not None and claimed.strip().lower() != received.sha256:
            raise Unprocessable("The file's content does not match its 'file_sha256': nothing was stored.")
        size = received.fields.get("file_size")
        if size is not None and size.strip() != str(received.size):
            raise Unprocessable("The file's size does not match its 'file_size': nothing was stored.")
        return received
    sha256 = received.sha256.strip().lower()
    stored = await to_thread.run_sync(partial(files.find_file, db, owner=owner, sha256=sha256))
    if stored is None:
        raise _send_the_bytes()
    if received.size >= 0 and received.size != stored.size:
        raise Unprocessable("'file_size' does not match the size of the stored file with this 'file_sha256'.")
    return dataclasses.replace(received, sha256=sha256, size=stored.size, content_type=stored.content_type)


async def _linked(db: Database, storage: Storage, job: Job, linked: files.Linked, *, stored: bool) -> Job:
    """The committed job as :func:`files.link` made it; the bytes this upload stored in vain go
    (none for a small upload kept in the database: its blob was inserted only for new content)."""
    if not stored:
        metrics.UPLOAD_BYTES_SKIPPED.inc(job.file_size)
    if linked.changes:
        job = new_job(**{**job.model_dump(), **linked.changes})
    if linked.redundant_key is not None:
        metrics.STORED_BYTES_SHARED.inc(job.file_size)
    if linked.redundant_key is not None and not inline_uploads.is_inline(linked.redundant_key):
        try:
            await to_thread.run_sync(storage.delete, linked.redundant_key)
        except Exception as exc:  # the orphan scan removes it later
            log.warning("job %s: its redundant upload stays until the orphan scan: %r", job.id, exc)
    if linked.reused_from is not None:
        metrics.JOBS_REUSED.labels(job.processor).inc()
        fresh = await to_thread.run_sync(partial(repository.get_job, db, job.id))
        return fresh or job
    return job
