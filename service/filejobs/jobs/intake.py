"""Upload intake: everything ``POST /v1/jobs`` does between the request and its answer.

Refuse early what cannot be taken (507 short of disk, 503 queue too deep, 429 too many unfinished
jobs), hold the ``Idempotency-Key`` (a lease renewed while the body streams in, released if no job
is made), receive the upload and record the job (:func:`filejobs.jobs.submit.create_job`), or find
the job the same request made before. The route and :mod:`filejobs.api.fast_upload` both call
:func:`submit_upload`; neither HTTP nor FastAPI is known here: the body is an async iterator of
bytes, the headers a mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import anyio
from anyio import to_thread

from filejobs import metrics
from filejobs.db import Database
from filejobs.errors import Conflict, Problem
from filejobs.jobs import idempotency, repository
from filejobs.jobs.backpressure import Admission
from filejobs.jobs.fast_read import JobReader
from filejobs.jobs.group_commit import GroupCommitter
from filejobs.jobs.liveness import owner_is_dead_here
from filejobs.jobs.submit import (
    IdempotencyPlan,
    create_job,
    record_job,
    request_fingerprint,
    split_secrets,
    validate_fields,
)
from filejobs.models import Job
from filejobs.processors.registry import Registry
from filejobs.settings import Settings
from filejobs.shutdown import Shutdown
from filejobs.storage import Storage
from filejobs.uploads import ReceivedFile, by_hash_file

#: Seconds an upload holds its Idempotency-Key without renewing (it renews every third of it).
IDEMPOTENCY_LEASE = 60.0
#: Who holds an Idempotency-Key: this process (a restarted node takes a dead one's keys at once).
HOLDER = f"{socket.gethostname()}:{os.getpid()}:api"


class IntakeServices(Protocol):
    """What an upload needs of the service (:class:`filejobs.services.Services` has it all)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def db(self) -> Database: ...
    @property
    def storage(self) -> Storage: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def admission(self) -> Admission: ...
    @property
    def reader(self) -> JobReader: ...
    @property
    def committer(self) -> GroupCommitter: ...
    @property
    def shutdown(self) -> Shutdown: ...


@dataclass(frozen=True)
class Submitted:
    """The job an upload made, or (``replayed``) the one the same request made before."""

    job: Job
    replayed: bool = False


async def submit_upload(
    *,
    services: IntakeServices,
    owner: str,
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    idempotency_key: str | None = None,
) -> Submitted:
    """Take the upload of ``owner`` (multipart ``headers`` and ``body``) and record a queued job.

    Before any byte is stored: 507 when the disk is short (uploads stored on it), 503 when the
    queue is too deep, 429 when the owner has too many unfinished jobs, 409 while a request with
    the same ``idempotency_key`` is still uploading. The caller dispatches a new job after answering."""
    length = _content_length(headers)
    if length is not None and length > services.settings.max_upload_bytes:
        length = None  # the receiver refuses it (413) before reading a byte
    if services.storage.on_disk and not services.admission.check_disk_cached(length):
        await to_thread.run_sync(services.admission.check_disk, length)
    async with _holding(services, owner, idempotency_key) as plan:
        await _admit(services, owner, plan)
        with metrics.track_upload() as upload:
            made = await create_job(
                db=services.db,
                storage=services.storage,
                registry=services.registry,
                settings=services.settings,
                headers=headers,
                body=body,
                owner=owner,
                idempotency=plan,
                committer=services.committer,
                shutdown=services.shutdown,
            )
            if isinstance(made, Job):
                upload.accepted(made.file_size)
    return await _submitted(services, owner, made)


async def submit_received(
    *,
    services: IntakeServices,
    owner: str,
    received: ReceivedFile,
    job_id: str,
    idempotency_key: str | None = None,
) -> Submitted:
    """Record the job of a file already received in full (a finished resumable upload, admitted
    when it was created): the same validation, idempotency, row and group commit as
    :func:`submit_upload`, under the id ``job_id`` the caller chose."""
    async with _holding(services, owner, idempotency_key) as plan:
        made = await _record(services, owner, received, plan, job_id=job_id)
    return await _submitted(services, owner, made)


async def submit_by_hash(
    *,
    services: IntakeServices,
    owner: str,
    fields: dict[str, str],
    idempotency_key: str | None = None,
) -> Submitted:
    """Record the job of an upload by hash given as its fields alone (one item of
    ``POST /v1/jobs/by-hash``): what :func:`submit_upload` does for a multipart form with a
    ``file_sha256`` field and no file part, without the multipart body. 428 when ``owner`` has not
    stored that content, 429 when it has too many unfinished jobs; the Idempotency-Key as there."""
    received = by_hash_file(fields)
    async with _holding(services, owner, idempotency_key) as plan:
        await _admit(services, owner, plan)
        made = await _record(services, owner, received, plan)
    return await _submitted(services, owner, made)


async def _admit(services: IntakeServices, owner: str, plan: IdempotencyPlan | None) -> None:
    """429 when ``owner`` has too many unfinished jobs, unless the request replays its key's job."""
    if (plan is None or plan.existing is None) and not services.admission.check_new_job_cached(owner):
        await to_thread.run_sync(services.admission.check_new_job, owner)


async def _record(
    services: IntakeServices,
    owner: str,
    received: ReceivedFile,
    plan: IdempotencyPlan | None,
    *,
    job_id: str | None = None,
) -> Job | idempotency.Existing:
    """:func:`record_job` with this intake's services."""
    return await record_job(
        db=services.db,
        storage=services.storage,
        registry=services.registry,
        settings=services.settings,
        received=received,
        owner=owner,
        idempotency=plan,
        committer=services.committer,
        job_id=job_id,
    )


async def _submitted(services: IntakeServices, owner: str, made: Job | idempotency.Existing) -> Submitted:
    """The answer: the new job, or the one the same request made before."""
    if isinstance(made, idempotency.Existing):
        return Submitted(await _replayed(services, owner, made), replayed=True)
    return Submitted(made)


Replays = dict[str, tuple[idempotency.Existing, Job]]


async def known_replays(services: IntakeServices, owner: str, keys: list[str]) -> Replays:
    """Which of ``keys`` (Idempotency-Keys of ``owner``) finished requests made, with their jobs,
    in two reads for all of them: a batch by hash sent again (a re-run) is mostly replays."""
    return await to_thread.run_sync(_known_replays, services.db, owner, keys)


def _known_replays(db: Database, owner: str, keys: list[str]) -> Replays:
    found = idempotency.find_done_many(db, scope=owner, keys=keys)
    jobs = repository.get_jobs(db, [existing.job_id for existing in found.values()], owner=owner)
    return {
        key: (existing, jobs[existing.job_id]) for key, existing in found.items() if existing.job_id in jobs
    }


def replay_by_hash(
    services: IntakeServices, fields: dict[str, str], known: tuple[idempotency.Existing, Job]
) -> Submitted | None:
    """The answer to an upload by hash whose Idempotency-Key a finished request used (``known``,
    from :func:`known_replays`), when this is that same request; None when that cannot be told
    without the single path (no ``file_size``, a bad field, another request: it answers those)."""
    existing, job = known
    try:
        received = by_hash_file(fields)
        submission = validate_fields(services.registry, fields)
    except Problem:
        return None
    if received.size < 0:  # the size the key's print holds is the stored file's: the single path reads it
        return None
    public, secret = split_secrets(submission.params)
    if (
        request_fingerprint(submission.entry.processor.name, {**public, **secret}, received)
        != existing.fingerprint
    ):
        return None
    return Submitted(job, replayed=True)


@contextlib.asynccontextmanager
async def _holding(
    services: IntakeServices, owner: str, idempotency_key: str | None
) -> AsyncIterator[IdempotencyPlan | None]:
    """Claim ``idempotency_key`` (or find what it made) and hold it, renewed, while the body runs;
    release it if that fails."""
    if idempotency_key is None:
        yield None
        return
    state = await to_thread.run_sync(_begin, services, owner, idempotency.parse_key(idempotency_key))
    plan = IdempotencyPlan(
        claim=state if isinstance(state, idempotency.Claim) else None,
        existing=state if isinstance(state, idempotency.Existing) else None,
    )
    claim = plan.claim
    renewer = asyncio.create_task(_renew_claim(services.db, claim)) if claim is not None else None
    try:
        yield plan
    except BaseException:
        await _release(services.db, claim)
        raise
    finally:
        if renewer is not None:
            renewer.cancel()


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None  # junk: the receiver's 400


def _begin(services: IntakeServices, owner: str, key: str) -> idempotency.Claim | idempotency.Existing:
    """Claim the key, or find what it made; a key whose job has been deleted is free again."""
    begin = partial(
        idempotency.begin,
        services.db,
        scope=owner,
        key=key,
        token=secrets.token_hex(16),
        holder=HOLDER,
        ttl=services.settings.idempotency_ttl,
        lease_seconds=IDEMPOTENCY_LEASE,
        holder_is_dead=owner_is_dead_here,
    )
    state = idempotency.find_done(services.db, scope=owner, key=key) or begin()
    if isinstance(state, idempotency.Existing) and not repository.get_job(
        services.db, state.job_id, owner=owner
    ):
        idempotency.forget(services.db, state)
        state = begin()
    return state


async def _renew_claim(db: Database, claim: idempotency.Claim) -> None:
    """Keep this upload's hold on its Idempotency-Key while the body streams in."""
    while True:
        await asyncio.sleep(IDEMPOTENCY_LEASE / 3)
        with contextlib.suppress(Exception):
            await to_thread.run_sync(partial(idempotency.renew, db, claim, lease_seconds=IDEMPOTENCY_LEASE))


async def _release(db: Database, claim: idempotency.Claim | None) -> None:
    if claim is not None:
        with anyio.CancelScope(shield=True):
            await to_thread.run_sync(idempotency.release, db, claim)


async def _replayed(services: IntakeServices, owner: str, existing: idempotency.Existing) -> Job:
    job = await services.reader.aget(existing.job_id, owner=owner)
    if job is None:
        await to_thread.run_sync(idempotency.forget, services.db, existing)
        raise Conflict(
            "The job made with this Idempotency-Key has been deleted; send the request again to make "
            "a new one."
        )
    return job
