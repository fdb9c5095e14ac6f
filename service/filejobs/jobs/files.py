"""Content-addressed files per owner, and result reuse: what a job references, and when bytes go.

A tenant's content is stored once: the ``files`` row of (owner, SHA-256) names the key its bytes
are kept under (the first upload's ``uploads/<job id>``). A job references a key through its
``storage_key``; a reused job references another job's output through its ``output_key``. The
count of references is derived (the jobs naming the key), never stored, so it cannot drift:

* A new job links its file in the transaction that inserts its row (:func:`link`): it makes the
  ``files`` row, or takes the existing one's key (locking the row), in which case the bytes it
  just stored are redundant and deleted after the commit (:attr:`Linked.redundant_key`).
* A deleted job releases its keys in the transaction that deletes its row (:func:`release`): a key
  no remaining job names is garbage, and so is the ``files`` row naming it; the bytes are deleted
  only after the commit (:func:`collect`), except a small upload's kept in the database
  (:mod:`filejobs.jobs.inline_uploads`): its row is deleted in that transaction.
* A crash before that commit changes nothing (the row and its references stay); a crash after it
  leaves unreferenced bytes, which the sweeper's orphan scan removes past a grace
  (:func:`remove_orphans`): it removes only keys no row references.

Another owner's content is never found: every lookup has the owner in its key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from filejobs.db import Database
from filejobs.ids import is_job_id
from filejobs.jobs import inline_uploads
from filejobs.jobs.group_commit import NothingWritten
from filejobs.models import Job, JobStatus, StoredFile, status_is
from filejobs.storage import Storage, upload_key

log = logging.getLogger(__name__)

_JOBS = Job.__table__  # type: ignore[attr-defined]
_FILES = StoredFile.__table__  # type: ignore[attr-defined]
SUCCEEDED = JobStatus.succeeded.value

_FILE_BY_HASH = select(_FILES).where(
    _FILES.c.owner == bindparam("b_owner"), _FILES.c.sha256 == bindparam("b_sha256")
)
_FILE_BY_HASH_LOCKED = _FILE_BY_HASH.with_for_update()
_MATCH = (
    select(_JOBS)
    .where(
        _JOBS.c.owner == bindparam("b_owner"),
        _JOBS.c.file_sha256 == bindparam("b_sha256"),
        _JOBS.c.processor == bindparam("b_processor"),
        _JOBS.c.processor_version == bindparam("b_version"),
        _JOBS.c.params_digest == bindparam("b_digest"),
        status_is(JobStatus.succeeded),  # a literal: ix_jobs_reuse is partial on it
    )
    # The job that ran first (while it is kept), else the newest that took its result.
    .order_by(_JOBS.c.reused_from.is_not(None), _JOBS.c.finished_at.desc())
    .limit(1)
    .with_for_update()
)


def params_digest(params: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a job's params (sorted keys, no spaces)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find_file(db: Database, *, owner: str, sha256: str) -> StoredFile | None:
    """The ``files`` row of ``owner``'s content ``sha256`` (None: not stored for this owner).
    One primary-key lookup whoever asks: another owner's content costs what unknown content does."""
    with db.read_connection() as conn:
        row = conn.execute(_FILE_BY_HASH, {"b_owner": owner, "b_sha256": sha256}).mappings().first()
    return StoredFile.model_construct(**row) if row is not None else None


@dataclass
class Linked:
    """What :func:`link` decided for a new job (read once the transaction committed)."""

    #: The key of the bytes this upload stored that another key already holds (delete after commit).
    redundant_key: str | None = None
    #: The job whose result the new job took (None: it runs).
    reused_from: str | None = None
    #: The values :func:`link` changed in the new job's row (applied to the returned job too).
    changes: dict[str, Any] = field(default_factory=dict)


class NotStored(NothingWritten):
    """Upload by hash of content the owner does not have (any more): the client sends the bytes.
    Raised by :func:`link` before it wrote anything (a group commit fails this job alone)."""


# INSERT … ON CONFLICT DO NOTHING, one statement per dialect built once (its compiled form cached).
_INSERT_IGNORE = {
    "postgresql": postgresql.insert(_FILES).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_FILES).on_conflict_do_nothing(),
}


def _insert_ignore(session: Session, values: dict[str, Any]) -> int:
    """Insert the ``files`` row unless one exists: 1 when inserted (new content), else 0."""
    conn = session.connection()
    return int(conn.execute(_INSERT_IGNORE[conn.dialect.name], values).rowcount)


def link(session: Session, values: dict[str, Any], *, stored: bool, reuse: bool, now: Any) -> Linked:
    """Link a new job's file before its row is inserted (in that transaction): mutate ``values``.

    ``stored``: this upload stored its bytes under ``values["storage_key"]`` (else it came by hash
    and must find the owner's content, or :class:`NotStored` is raised). ``reuse``: look for a
    kept succeeded job to take the result of."""
    linked = Linked()
    owner, sha256 = values["owner"], values["file_sha256"]
    conn = session.connection()
    row = None
    for _ in range(3):  # the row can go between the two statements (its last job deleted)
        if stored and _insert_ignore(
            session,
            {
                "owner": owner,
                "sha256": sha256,
                "storage_key": values["storage_key"],
                "size": values["file_size"],
                "content_type": values["file_content_type"],
                "created_at": now,
            },
        ):
            return linked  # nothing of this owner has this content: nothing to share or reuse
        row = conn.execute(_FILE_BY_HASH_LOCKED, {"b_owner": owner, "b_sha256": sha256}).mappings().first()
        if row is not None or not stored:
            break
    if row is None:
        raise NotStored(sha256)
    if row["storage_key"] != values["storage_key"]:
        if stored:
            linked.redundant_key = values["storage_key"]
        linked.changes["storage_key"] = row["storage_key"]
    if not stored:
        linked.changes["file_content_type"] = row["content_type"]
    if reuse:
        source = (
            conn.execute(
                _MATCH,
                {
                    "b_owner": owner,
                    "b_sha256": sha256,
                    "b_processor": values["processor"],
                    "b_version": values["processor_version"],
                    "b_digest": values["params_digest"],
                },
            )
            .mappings()
            .first()
        )
        if source is not None:
            linked.reused_from = source["id"]
            linked.changes.update(
                status=SUCCEEDED,
                attempts=0,
                progress=1.0,
                result=source["result"],
                output_key=source["output_key"],
                output_name=source["output_name"],
                output_content_type=source["output_content_type"],
                message=f"reused the result of job {source['id']}",
                started_at=now,
                finished_at=now,
                reused_from=source["id"],
            )
    values.update(linked.changes)
    return linked


@dataclass
class Garbage:
    """Bytes no job references any more, to delete after the transaction that made them garbage."""

    #: Job ids whose ``outputs/<id>/`` go (first: an upload left by a failure marks the leftovers).
    outputs: list[str] = field(default_factory=list)
    #: Single keys that go (uploads).
    keys: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outputs or self.keys)


def _referenced(session: Session, column: Any, key: str) -> bool:
    query = select(func.count()).select_from(_JOBS).where(column == key)
    return bool(session.connection().execute(query.limit(1)).scalar())


def _outputs_referenced(session: Session, job_id: str) -> bool:
    """Whether a job's ``output_key`` is under ``outputs/<job_id>/``: a prefix match that
    ``ix_jobs_output_key`` serves, the prefix a literal (a parameter hides it from a generic plan).
    PostgreSQL: ``LIKE`` on the index's ``varchar_pattern_ops`` (any collation); SQLite: ``GLOB``
    (its ``LIKE`` ignores case, so no index serves it)."""
    conn = session.connection()
    if not is_job_id(job_id):  # not a UUID (a malformed key's home): as before, no index
        matches = _JOBS.c.output_key.like(f"outputs/{job_id}/%")
    elif conn.dialect.name == "sqlite":  # a UUID has no wildcard of GLOB or LIKE
        matches = _JOBS.c.output_key.op("GLOB")(literal(f"outputs/{job_id}/*", literal_execute=True))
    else:
        matches = _JOBS.c.output_key.like(literal(f"outputs/{job_id}/%", literal_execute=True))
    return conn.execute(select(_JOBS.c.id).where(matches).limit(1)).first() is not None


def _exists(session: Session, job_id: str) -> bool:
    return session.connection().execute(select(_JOBS.c.id).where(_JOBS.c.id == job_id)).first() is not None


def output_home(key: str | None) -> str | None:
    """The job whose ``outputs/<id>/`` holds the output ``key`` (None: no output)."""
    if not key or not key.startswith("outputs/"):
        return None
    return key.split("/", 2)[1]


def lock_content(session: Session, *, owner: str, sha256: str) -> None:
    """Lock the ``files`` row of this content (if any) for the transaction, before the job rows
    (:func:`link` takes them in that order too): a job linking to the content waits for a delete
    releasing it, or the delete counts its reference (PostgreSQL; SQLite's writers take turns)."""
    session.connection().execute(_FILE_BY_HASH_LOCKED, {"b_owner": owner, "b_sha256": sha256}).first()


def release(session: Session, job: Job) -> Garbage:
    """After ``job``'s row was deleted in ``session`` (its content locked first:
    :func:`lock_content`): what of its files no remaining job needs. Its ``files`` row goes in this
    transaction with the last reference to its key."""
    garbage = Garbage()
    if job.storage_key and not _referenced(session, _JOBS.c.storage_key, job.storage_key):
        session.execute(
            delete(StoredFile).where(
                and_(
                    _FILES.c.owner == job.owner,
                    _FILES.c.sha256 == job.file_sha256,
                    _FILES.c.storage_key == job.storage_key,
                )
            )
        )
        if inline_uploads.is_inline(job.storage_key):  # bytes in the database: they go with the row
            inline_uploads.delete_blob(session, job.storage_key)
        else:
            garbage.keys.append(job.storage_key)
    own_upload = upload_key(job.id)
    if job.storage_key != own_upload and not _referenced(session, _JOBS.c.storage_key, own_upload):
        garbage.keys.append(own_upload)  # bytes of its own left redundant by a crash: none, mostly
    home = output_home(job.output_key)
    if not _outputs_referenced(session, job.id):
        garbage.outputs.append(job.id)
    if (
        home is not None
        and home != job.id
        and not _exists(session, home)
        and not _outputs_referenced(session, home)
    ):
        garbage.outputs.append(home)  # the last reference to a deleted job's output
    return garbage


def collect(storage: Storage, garbage: Garbage) -> None:
    """Delete the bytes of ``garbage`` (after the commit that made them garbage). A crash or an
    unreachable store here leaves them to the sweeper's orphan scan."""
    for job_id in garbage.outputs:
        storage.delete_outputs(job_id)
    for key in garbage.keys:
        storage.delete(key)


def unreferenced(db: Database, job_ids: Iterable[str]) -> Garbage:
    """The uploads and outputs stored under these job ids that no row references."""
    garbage = Garbage()
    with db.read() as session:
        for job_id in job_ids:
            if not is_job_id(job_id):
                continue
            if not _exists(session, job_id) and not _outputs_referenced(session, job_id):
                garbage.outputs.append(job_id)
            key = upload_key(job_id)
            if not _referenced(session, _JOBS.c.storage_key, key):
                garbage.keys.append(key)
    return garbage


def remove_orphans(*, db: Database, storage: Storage, min_age: float) -> int:
    """Delete stored bytes no row references, once ``min_age`` s old: uploads whose row never
    committed (the process died in between) or that a crash left after their last reference went,
    and outputs of deleted jobs no reused job references. A referenced key is never removed.
    Returns how many uploads and output directories went."""
    uploads = storage.uploads_older_than(min_age)
    outputs = set(storage.outputs_older_than(min_age)) - set(uploads)
    # No new reference to an unreferenced key can appear: upload by hash needs the ``files`` row
    # (gone with the last reference) and a reuse a job that references the output; a fresh
    # upload's own key is younger than the grace.
    garbage = unreferenced(db, [*uploads, *sorted(outputs)])
    collect(storage, garbage)
    return len(garbage.keys) + len(outputs.intersection(garbage.outputs))
