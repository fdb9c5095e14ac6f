"""Every query on the ``jobs`` table (procrastinate's JobManager role).

Each state change is one conditional UPDATE (``WHERE id = ? AND status = ?`` and, for a running
job, ``AND lease_owner = ?``), so a duplicate delivery, a crashed worker or a cancel racing a
finish can never run a job twice at once or move a terminal status. Every change bumps
``version``, which the API turns into the ETag.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import (
    LargeBinary,
    String,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from filejobs.db import Database
from filejobs.errors import BadRequest, Conflict, NotFound
from filejobs.ids import is_job_id
from filejobs.jobs.files import Garbage, lock_content, release
from filejobs.models import Job, JobStatus, WebhookEndpoint, status_is, utcnow
from filejobs.webhooks.outbox import record_job_event

#: Undelivered webhooks one key may have (``Settings.webhook_max_pending``'s default).
MAX_PENDING_WEBHOOKS = 10_000

RUNNING = JobStatus.running.value
QUEUED = JobStatus.queued.value


#: The sweeper's conditions: the partial ix_jobs_queued_run_after and ix_jobs_running_lease_expires_at.
IS_QUEUED = status_is(JobStatus.queued)
IS_RUNNING = status_is(JobStatus.running)


def _update() -> Update:
    """``UPDATE jobs``, without the ORM's synchronisation of loaded objects (every session here is
    short; nothing loaded in it is read after an update, and evaluating the WHERE clause in Python
    cost more than the statement)."""
    return update(Job).execution_options(synchronize_session=False)


def _bump() -> dict[str, Any]:
    return {"version": col(Job.version) + 1, "updated_at": utcnow()}


def _owned(job_id: str, owner: str) -> ColumnElement[bool]:
    return and_(col(Job.id) == job_id, col(Job.status) == RUNNING, col(Job.lease_owner) == owner)


# ---- reads ----------------------------------------------------------------------------------


def get_job(db: Database, job_id: str, *, owner: str | None = None) -> Job | None:
    """The row, or None for an unknown (or malformed) id, or one of another ``owner``."""
    if not is_job_id(job_id):
        return None
    with db.read() as session:
        return _by_id(session, job_id, owner, locked=False)


def get_jobs(db: Database, job_ids: list[str], *, owner: str) -> dict[str, Job]:
    """The rows of ``owner`` among ``job_ids``, by id, in one read."""
    wanted = [job_id for job_id in job_ids if is_job_id(job_id)]
    if not wanted:
        return {}
    with db.read() as session:
        query = select(Job).where(col(Job.id).in_(wanted), col(Job.owner) == owner)
        return {job.id: job for job in session.exec(query)}


# One job by id; a caller's with the owner in the WHERE clause, so that another owner's job costs
# what an unknown id does (no row: nothing loaded, then compared and dropped). Built once with
# bind parameters: building a select per call cost more than session.get's ~0.4 ms.
_BY_ID = select(Job).where(col(Job.id) == bindparam("b_job_id"))
_BY_ID_OWNED = _BY_ID.where(col(Job.owner) == bindparam("b_owner"))
_BY_ID_STATEMENTS = {
    (False, False): _BY_ID,
    (True, False): _BY_ID_OWNED,
    (False, True): _BY_ID.with_for_update(),
    (True, True): _BY_ID_OWNED.with_for_update(),
}


def _by_id(session: Session, job_id: str, owner: str | None, *, locked: bool) -> Job | None:
    """The row (``FOR UPDATE`` if ``locked``), or None: one statement whether or not it exists."""
    statement = _BY_ID_STATEMENTS[owner is not None, locked]
    return session.exec(statement, params={"b_job_id": job_id, "b_owner": owner}).first()


def require_job(db: Database, job_id: str, *, owner: str | None = None) -> Job:
    job = get_job(db, job_id, owner=owner)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    return job


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        job_id = ""
    if not is_job_id(job_id):
        raise BadRequest("The cursor is not one this service issued.")
    return job_id


def _list_query(
    table: Any, owner: str | None, status: JobStatus | None, processor: str | None, cursor: str | None
) -> Any:
    query = sa_select(table)
    if owner is not None:
        query = query.where(table.c.owner == owner)
    if status is not None:
        query = query.where(table.c.status == status.value)
    if processor is not None:
        query = query.where(table.c.processor == processor)
    if cursor is not None:
        query = query.where(table.c.id < decode_cursor(cursor))
    return query.order_by(table.c.id.desc())


def list_jobs(
    db: Database,
    *,
    owner: str | None = None,
    status: JobStatus | None = None,
    processor: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on the time-ordered id, and the next page's cursor.

    The jobs are plain attribute views of the rows (a Core query), not models: a ``Job`` costs
    about 50 µs to build, a page of 50 of them more than the query. Read them, never write them.
    """
    table = Job.__table__  # type: ignore[attr-defined]
    query = _list_query(table, owner, status, processor, cursor).limit(limit + 1)
    with db.read_connection() as conn:
        rows = [SimpleNamespace(**row) for row in conn.execute(query).mappings()]
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return cast(list[Job], rows[:limit]), next_cursor


def due_job_ids(db: Database, *, now: datetime | None = None, limit: int = 1000) -> list[str]:
    """Queued jobs whose backoff has passed, oldest first."""
    now = now or utcnow()
    query = (
        select(Job.id)
        .where(IS_QUEUED, col(Job.run_after) <= now)
        .order_by(col(Job.run_after), col(Job.id))
        .limit(limit)
    )
    with db.read() as session:
        return list(session.exec(query).all())


def undispatched_job_ids(
    db: Database, *, stale_before: datetime, now: datetime | None = None, limit: int = 1000
) -> tuple[list[str], list[str]]:
    """Due queued jobs the broker may not hold: ``(never, stale)``.

    ``never``: no publish of this queued spell succeeded (the broker was down, or the API died
    between commit and publish). ``stale``: published before ``stale_before`` and still queued,
    oldest first (their message may have been lost with a broker restart).
    """
    now = now or utcnow()
    due = and_(IS_QUEUED, col(Job.run_after) <= now)
    never = (
        select(Job.id).where(due, col(Job.dispatched_at).is_(None)).order_by(col(Job.run_after)).limit(limit)
    )
    stale = (
        select(Job.id)
        .where(due, col(Job.dispatched_at) < stale_before)
        .order_by(col(Job.dispatched_at), col(Job.id))
        .limit(limit)
    )
    with db.read() as session:
        return list(session.exec(never).all()), list(session.exec(stale).all())


def mark_dispatched(db: Database, job_ids: Sequence[str], *, at: datetime | None = None) -> int:
    """Record that the broker accepted a message for these queued jobs (not a client-visible change:
    no version bump). On PostgreSQL one statement in autocommit, not durable: a mark lost to a power
    cut only means the sweeper publishes the job again, and a duplicate message is harmless."""
    if not job_ids:
        return 0
    if not db.is_sqlite:
        params = {"b_ids": list(job_ids), "b_at": at or utcnow()}
        return len(db.write_one(_MARK_DISPATCHED, params, durable=False))
    with db.write() as session:
        return session.exec(
            _update()
            .where(col(Job.id).in_(list(job_ids)), col(Job.status) == QUEUED)
            .values(dispatched_at=at or utcnow())
        ).rowcount


def count_jobs(db: Database) -> list[tuple[str, str, int]]:
    """``(status, processor, rows)`` for every pair that has rows (one GROUP BY; for the metrics)."""
    query = select(col(Job.status), col(Job.processor), func.count()).group_by(
        col(Job.status), col(Job.processor)
    )
    with db.read() as session:
        return [(status, processor, int(rows)) for status, processor, rows in session.exec(query).all()]


def queue_stats(db: Database, *, now: datetime | None = None) -> tuple[int, datetime | None]:
    """How many queued jobs are due, and the earliest ``run_after`` among them (None: none due)."""
    now = now or utcnow()
    query = select(func.count(), func.min(col(Job.run_after))).where(IS_QUEUED, col(Job.run_after) <= now)
    with db.read() as session:
        due, oldest = session.exec(query).one()
    return int(due), oldest


# ---- creation and client actions ------------------------------------------------------------


def insert_job(
    db: Database,
    job: Job,
    *,
    before_commit: Callable[[Session], None] | None = None,
    prepare: Callable[[Session, dict[str, Any]], None] | None = None,
) -> Job:
    """Insert the row; ``prepare`` may change its values first and ``before_commit`` runs after
    it, both in the same transaction (either may raise to undo it). A Core INSERT of the job's
    values, so a :func:`~filejobs.models.new_job` is fine too."""
    values = job.model_dump()
    with db.write() as session:
        if prepare is not None:
            prepare(session, values)
        session.execute(insert(Job.__table__), [values])  # type: ignore[attr-defined]
        if before_commit is not None:
            before_commit(session)
    return job


def count_queued(db: Database) -> int:
    with db.read() as session:
        return int(session.exec(select(func.count()).select_from(Job).where(IS_QUEUED)).one())


def count_unfinished(db: Database, owner: str) -> int:
    """Queued or running jobs of ``owner``."""
    query = (
        select(func.count())
        .select_from(Job)
        .where(col(Job.owner) == owner, col(Job.status).in_([QUEUED, RUNNING]))
    )
    with db.read() as session:
        return int(session.exec(query).one())


def cancel_job(
    db: Database, job_id: str, *, owner: str | None = None, max_pending_webhooks: int = MAX_PENDING_WEBHOOKS
) -> Job:
    """queued or running → cancelled. A running job's worker sees it lost the row and stops. The
    key's webhooks for it are queued in the same transaction."""
    with db.write() as session:
        job = _locked(session, job_id, owner)
        if JobStatus(job.status).terminal:
            raise Conflict(f"The job is already {job.status}.", status_of_job=job.status)
        now = utcnow()
        session.exec(
            _update()
            .where(col(Job.id) == job_id, col(Job.status) == job.status)
            .values(
                status=JobStatus.cancelled.value,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                message="cancelled",
                **_bump(),
            )
        )
        record_job_event(session, job_id, max_pending=max_pending_webhooks)
        session.refresh(job)
        return job


def _locked(session: Session, job_id: str, owner: str | None = None) -> Job:
    """The row, locked for this transaction (``FOR UPDATE`` on PostgreSQL; on SQLite the
    ``BEGIN IMMEDIATE`` of a write session already serialises writers), or 404."""
    job = _by_id(session, job_id, owner, locked=True) if is_job_id(job_id) else None
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    return job


def retry_job(db: Database, job_id: str, *, max_attempts: int, owner: str | None = None) -> Job:
    """failed or cancelled → queued with a fresh attempt budget."""
    with db.write() as session:
        job = _locked(session, job_id, owner)
        if job.status not in (JobStatus.failed.value, JobStatus.cancelled.value):
            raise Conflict(
                f"Only failed or cancelled jobs can be retried; this one is {job.status}.",
                status_of_job=job.status,
            )
        now = utcnow()
        session.exec(
            _update()
            .where(col(Job.id) == job_id, col(Job.status) == job.status)
            .values(
                status=QUEUED,
                attempts=0,
                max_attempts=max_attempts,
                progress=0.0,
                message=None,
                error_code=None,
                error_message=None,
                result=None,
                output_key=None,
                output_name=None,
                output_content_type=None,
                started_at=None,
                finished_at=None,
                run_after=now,
                dispatched_at=None,
                notification=None,
                **_bump(),
            )
        )
        session.refresh(job)
        return job


def delete_job(db: Database, job_id: str, *, owner: str | None = None) -> Job:
    """Remove the row (a running job's worker sees the row gone and stops). Returns what it was;
    its files' bytes are left to the orphan scan (:func:`delete_job_releasing` says which go)."""
    return delete_job_releasing(db, job_id, owner=owner)[0]


def delete_job_releasing(db: Database, job_id: str, *, owner: str | None = None) -> tuple[Job, Garbage]:
    """Remove the row and, in the same transaction, its references to stored files: returns what
    it was and the bytes no remaining job references (delete them after this returns)."""
    with db.write() as session:
        if not _lock_content_of(session, job_id, owner):  # one statement for an unknown id too
            raise NotFound(f"No job with id {job_id!r}.")
        job = _locked(session, job_id, owner)
        session.exec(delete(Job).where(col(Job.id) == job_id))
        return job, release(session, job)


def _lock_content_of(session: Session, job_id: str, owner: str | None) -> bool:
    """Lock the ``files`` row of the job's content before the job's row (the order new jobs take);
    False when there is no such job (of ``owner``)."""
    seen = _by_id(session, job_id, owner, locked=False) if is_job_id(job_id) else None
    if seen is None:
        return False
    lock_content(session, owner=seen.owner, sha256=seen.file_sha256)
    return True


# ---- the worker's side ----------------------------------------------------------------------


_T = Job.__table__  # type: ignore[attr-defined]
_ENDPOINTS = WebhookEndpoint.__table__  # type: ignore[attr-defined]

#: :func:`mark_dispatched` on PostgreSQL (``= ANY`` of an array: one statement for any batch).
_MARK_DISPATCHED = (
    update(_T)
    .where(_T.c.id == any_(bindparam("b_ids", type_=postgresql.ARRAY(String))), _T.c.status == QUEUED)
    .values(dispatched_at=bindparam("b_at"))
    .returning(_T.c.id)
)

# The worker's two statements per job, built once with bind parameters: SQLAlchemy then reuses
# their compiled form and cache key (building an ORM UPDATE per call cost about a millisecond).
_CLAIM_UPDATE = (
    update(_T)
    .where(_T.c.id == bindparam("b_job_id"), _T.c.status == QUEUED, _T.c.run_after <= bindparam("b_now"))
    .values(
        status=RUNNING,
        attempts=_T.c.attempts + 1,
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_lease_expires_at"),
        started_at=bindparam("b_now"),
        progress=0.0,
        message=None,
        version=_T.c.version + 1,
        updated_at=bindparam("b_now"),
    )
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """What :func:`~filejobs.jobs.runner.run_job` reads of the job it claimed: the claim returns
    these columns, not the row's 36 (decoding them and building a ``Job`` cost the worker about
    0.1 ms of CPU per job)."""

    id: str
    processor: str
    attempts: int
    params: dict[str, Any]
    secret_params: dict[str, Any] | None
    file_name: str
    file_size: int
    file_content_type: str
    storage_key: str
    #: The input's bytes when they are kept in the database (:mod:`filejobs.jobs.inline_uploads`),
    #: read by the claim itself: no round trip of their own.
    input_data: bytes | None = None


#: What a claim returns: :class:`Claimed`'s columns, and the input's bytes by a lookup of its key.
#: Spelled out: SQLAlchemy's SQLite dialect renders a RETURNING clause's columns unqualified, which
#: would turn the subquery's correlation into ``storage_key = storage_key`` (true for any blob).
_CLAIMED = (
    *(_T.c[field.name] for field in fields(Claimed) if field.name != "input_data"),
    literal_column(
        "(SELECT upload_blobs.data FROM upload_blobs WHERE upload_blobs.storage_key = jobs.storage_key)",
        LargeBinary(),
    ).label("input_data"),
)
_CLAIM = _CLAIM_UPDATE.returning(*_CLAIMED)
_FINISH_SUCCEEDED = (
    update(_T)
    .where(_T.c.id == bindparam("b_job_id"), _T.c.status == RUNNING, _T.c.lease_owner == bindparam("b_owner"))
    .values(
        status=JobStatus.succeeded.value,
        result=bindparam("b_result"),
        output_key=bindparam("b_output_key"),
        output_name=bindparam("b_output_name"),
        output_content_type=bindparam("b_output_content_type"),
        progress=1.0,
        message=bindparam("b_message"),
        # An earlier attempt's error does not describe a job that succeeded.
        error_code=None,
        error_message=None,
        finished_at=bindparam("b_now"),
        lease_owner=None,
        lease_expires_at=None,
        version=_T.c.version + 1,
        updated_at=bindparam("b_now"),
    )
)


#: No enabled webhook endpoint of the updated job's key (any event: a conservative test).
_NO_ENDPOINTS = ~exists().where(_ENDPOINTS.c.owner == _T.c.owner, _ENDPOINTS.c.enabled.is_(True))
#: The change in a transaction, returning whether the webhook outbox may have work for it: the
#: outbox's own ``SELECT`` of the job and its endpoints is needed only then.
_FINISH_SUCCEEDED_RETURNING = _FINISH_SUCCEEDED.returning(
    _T.c.callback_url,  # the value, not ``IS NOT NULL``: SQLite 3.40's RETURNING says 1 for a NULL
    # Spelled out: SQLAlchemy renders SQLite's RETURNING with unqualified columns, and there an
    # unqualified ``owner`` in the subquery names the job's (every endpoint would match).
    literal_column(
        "EXISTS (SELECT 1 FROM webhook_endpoints AS e WHERE e.owner = jobs.owner AND e.enabled)"
    ).label("has_endpoints"),
)
#: The same change when it has nothing for the webhook outbox (no ``callback_url``, no enabled
#: endpoint of the job's key: a conservative test, any endpoint counts): one statement that a
#: finish can run alone in autocommit, a commit of its own with no ``BEGIN``, outbox ``SELECT`` or
#: ``COMMIT`` round trips. No row: not ours, or the outbox has work (:func:`succeed_in` then).
_FINISH_SUCCEEDED_QUIET = _FINISH_SUCCEEDED.where(_T.c.callback_url.is_(None), _NO_ENDPOINTS).returning(
    _T.c.id
)


def _claim_params(owner: str, lease_seconds: float) -> dict[str, Any]:
    """A claim's parameters but the job's id: now, the owner, the lease's end."""
    now = utcnow()
    return {"b_now": now, "b_owner": owner, "b_lease_expires_at": now + timedelta(seconds=lease_seconds)}


def claim_job(db: Database, job_id: str, *, owner: str, lease_seconds: float) -> Claimed | None:
    """queued (and due) → running, owned by ``owner``; what the runner needs of it. None when
    someone else has it or it is gone."""
    params = {"b_job_id": job_id, **_claim_params(owner, lease_seconds)}
    rows = db.write_one(_CLAIM, params, durable=False)  # lost to a power cut: harmless
    return Claimed(**rows[0]) if rows else None


#: :data:`_CLAIM` of a job of a light processor (``b_light``) on an input of at most
#: ``b_max_bytes``: one a worker runs in its own thread in moments (:mod:`filejobs.jobs.inline`).
_CLAIM_QUICK = _CLAIM_UPDATE.where(
    _T.c.processor.in_(bindparam("b_light", expanding=True)), _T.c.file_size <= bindparam("b_max_bytes")
).returning(*_CLAIMED)


def claim_quick_jobs(
    db: Database,
    job_ids: Sequence[str],
    *,
    owner: str,
    lease_seconds: float,
    light: Sequence[str],
    max_bytes: int,
) -> list[Claimed | None]:
    """:func:`claim_job` for each of ``job_ids`` that is a job of a processor named in ``light`` on
    an input of at most ``max_bytes`` bytes, all in one transaction (one turn of SQLite's write lock,
    one commit); in their order. None for the others, left as they were: a heavier job, one not yet
    due, taken by someone else, or gone (the caller claims those one by one)."""
    common = {**_claim_params(owner, lease_seconds), "b_light": list(light), "b_max_bytes": max_bytes}
    params = [{"b_job_id": job_id, **common} for job_id in job_ids]
    rows = db.write_many(_CLAIM_QUICK, params, durable=False)  # lost to a power cut: harmless
    return [Claimed(**found[0]) if found else None for found in rows]


def renew_lease(db: Database, job_id: str, *, owner: str, lease_seconds: float) -> bool:
    """Extend the lease; False when the job is no longer ours (cancelled, deleted, expired)."""
    now = utcnow()
    with db.write(durable=False) as session:  # lost to a power cut: harmless
        return (
            session.exec(
                _update()
                .where(_owned(job_id, owner))
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            ).rowcount
            == 1
        )


def set_progress(
    db: Database, job_id: str, *, owner: str, progress: float, message: str | None, lease_seconds: float
) -> bool:
    """Record progress (and renew the lease); False when the job is no longer ours."""
    now = utcnow()
    values: dict[str, Any] = {
        "progress": max(0.0, min(1.0, progress)),
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        **_bump(),
    }
    if message is not None:
        values["message"] = message[:1000]
    with db.write(durable=False) as session:  # lost to a power cut: harmless
        return session.exec(_update().where(_owned(job_id, owner)).values(**values)).rowcount == 1


def finish_succeeded(
    db: Database,
    job_id: str,
    *,
    owner: str,
    result: dict[str, Any],
    output_key: str | None,
    output_name: str | None,
    output_content_type: str | None,
    message: str | None = None,
    max_pending_webhooks: int = MAX_PENDING_WEBHOOKS,
) -> bool:
    """running (ours) → succeeded; the key's webhooks for it are queued in the same transaction."""
    params = succeeded_params(
        job_id,
        owner=owner,
        result=result,
        output_key=output_key,
        output_name=output_name,
        output_content_type=output_content_type,
        message=message,
    )
    with db.write() as session:
        return succeed_in(session, params, max_pending_webhooks=max_pending_webhooks)


def succeeded_params(
    job_id: str,
    *,
    owner: str,
    result: dict[str, Any],
    output_key: str | None,
    output_name: str | None,
    output_content_type: str | None,
    message: str | None = None,
) -> dict[str, Any]:
    """The bind parameters of :func:`succeed_in` (``finished_at``: now)."""
    return {
        "b_job_id": job_id,
        "b_owner": owner,
        "b_result": result,
        "b_output_key": output_key,
        "b_output_name": output_name,
        "b_output_content_type": output_content_type,
        "b_message": message,
        "b_now": utcnow(),
    }


def succeed_in(session: Session, params: dict[str, Any], *, max_pending_webhooks: int) -> bool:
    """running (ours) → succeeded in ``session``'s transaction, the key's webhooks for it queued in
    the same one (:func:`succeeded_params` builds ``params``). False when the job is no longer ours.
    :func:`finish_succeeded` commits it alone; the worker pool's :class:`~filejobs.jobs.finisher.Finisher`
    commits many of them in one transaction."""
    changed = session.connection().execute(_FINISH_SUCCEEDED_RETURNING, params).first()
    if changed is None:
        return False
    if changed.callback_url is not None or changed.has_endpoints:  # else the outbox has nothing to write
        record_job_event(session, params["b_job_id"], max_pending=max_pending_webhooks)
    return True


def succeed_alone(db: Database, params: dict[str, Any]) -> bool:
    """running (ours) → succeeded in one durable statement of its own when the webhook outbox has
    nothing to write for it (:data:`_FINISH_SUCCEEDED_QUIET`); False when it wrote nothing: the
    job is no longer ours, or it has deliveries to queue (:func:`succeed_in` does both)."""
    return bool(db.write_one(_FINISH_SUCCEEDED_QUIET, params))


@dataclass(frozen=True)
class FailOutcome:
    """What :func:`finish_failed` did: ``status`` is ``queued`` (retry later) or ``failed``."""

    owned: bool
    status: JobStatus | None = None
    run_after: datetime | None = None


def finish_failed(
    db: Database,
    job_id: str,
    *,
    owner: str,
    code: str,
    message: str,
    retryable: bool,
    backoff: float,
    max_pending_webhooks: int = MAX_PENDING_WEBHOOKS,
) -> FailOutcome:
    """running → queued (retryable, attempts left: after ``backoff`` s) or → failed (with the key's
    webhooks for it queued in the same transaction)."""
    now = utcnow()
    with db.write() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status != RUNNING or job.lease_owner != owner:
            return FailOutcome(owned=False)
        common: dict[str, Any] = {
            "error_code": code[:100],
            "error_message": message[:2000],
            "lease_owner": None,
            "lease_expires_at": None,
            **_bump(),
        }
        if retryable and job.attempts < job.max_attempts:
            run_after = now + timedelta(seconds=backoff)
            values = {
                "status": QUEUED,
                "run_after": run_after,
                "dispatched_at": None,
                "message": f"retrying: {code}",
                **common,
            }
            outcome = FailOutcome(owned=True, status=JobStatus.queued, run_after=run_after)
        else:
            values = {"status": JobStatus.failed.value, "finished_at": now, **common}
            outcome = FailOutcome(owned=True, status=JobStatus.failed)
        done = session.exec(_update().where(_owned(job_id, owner)).values(**values)).rowcount
        if done != 1:
            return FailOutcome(owned=False)
        if outcome.status is JobStatus.failed:
            record_job_event(session, job_id, max_pending=max_pending_webhooks)
        return outcome


def release_job(db: Database, job_id: str, *, owner: str) -> bool:
    """running → queued without spending the attempt (the worker is shutting down)."""
    now = utcnow()
    with db.write() as session:
        return (
            session.exec(
                _update()
                .where(_owned(job_id, owner))
                .values(
                    status=QUEUED,
                    attempts=col(Job.attempts) - 1,
                    lease_owner=None,
                    lease_expires_at=None,
                    run_after=now,
                    dispatched_at=None,
                    progress=0.0,
                    message="returned to the queue at shutdown",
                    **_bump(),
                )
            ).rowcount
            == 1
        )


# ---- the sweeper's side ---------------------------------------------------------------------


def expire_leases(
    db: Database,
    *,
    now: datetime | None = None,
    owner_is_dead: Callable[[str], bool] | None = None,
    max_pending_webhooks: int = MAX_PENDING_WEBHOOKS,
) -> list[tuple[str, JobStatus]]:
    """Running rows whose lease ran out, or whose owner ``owner_is_dead`` says is gone, → queued
    (attempts left) or failed (``worker_lost``). Returns what moved."""
    now = now or utcnow()
    moved: list[tuple[str, JobStatus]] = []
    with db.write() as session:
        running = session.exec(select(Job).where(IS_RUNNING)).all()
        for job in running:
            expired = job.lease_expires_at is None or job.lease_expires_at < now
            if not expired and not (owner_is_dead and job.lease_owner and owner_is_dead(job.lease_owner)):
                continue
            lost = {
                "lease_owner": None,
                "lease_expires_at": None,
                "error_code": "worker_lost",
                "error_message": "The worker running this job stopped renewing its lease.",
                **_bump(),
            }
            if job.attempts < job.max_attempts:
                values = {
                    "status": QUEUED,
                    "run_after": now,
                    "dispatched_at": None,
                    "message": "worker lost; requeued",
                    **lost,
                }
                new_status = JobStatus.queued
            else:
                values = {"status": JobStatus.failed.value, "finished_at": now, **lost}
                new_status = JobStatus.failed
            where = and_(
                col(Job.id) == job.id,
                col(Job.status) == RUNNING,
                col(Job.lease_owner) == job.lease_owner,
                col(Job.version) == job.version,
            )
            if session.exec(_update().where(where).values(**values)).rowcount == 1:
                moved.append((job.id, new_status))
                if new_status is JobStatus.failed:
                    record_job_event(session, job.id, max_pending=max_pending_webhooks)
    return moved


def expired_jobs(db: Database, *, cutoff: datetime, limit: int = 500) -> Sequence[Job]:
    """Finished jobs older than ``cutoff`` (retention)."""
    finished = [JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value]
    query = select(Job).where(col(Job.status).in_(finished), col(Job.finished_at) < cutoff).limit(limit)
    with db.read() as session:
        return session.exec(query).all()


def delete_if_finished(db: Database, job_id: str, *, cutoff: datetime) -> bool:
    return delete_finished(db, job_id, cutoff=cutoff) is not None


def delete_finished(db: Database, job_id: str, *, cutoff: datetime) -> Garbage | None:
    """Delete the job if it finished before ``cutoff`` (retention), releasing its files in the same
    transaction: the bytes no remaining job references (None: not deleted)."""
    finished = [JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value]
    with db.write() as session:
        _lock_content_of(session, job_id, None)
        job = _by_id(session, job_id, None, locked=True)
        if job is None or job.status not in finished or job.finished_at is None or job.finished_at >= cutoff:
            return None
        session.exec(delete(Job).where(col(Job.id) == job_id))
        return release(session, job)


def job_exists(db: Database, job_id: str) -> bool:
    with db.read() as session:
        return session.exec(select(Job.id).where(col(Job.id) == job_id)).first() is not None
