"""Small uploads kept in the database: their bytes are a row, committed with their job's.

A small upload that arrives whole is held in memory until its row commits (see
:class:`filejobs.storage.LocalUploadSink`). Written as a file of its own, it costs the kernel a
create, a write, an fsync with its block allocation, a link and a share of the directory's fsync,
all before the row's commit may start: on a 2-core VM about 290 µs of system time per upload, and
two journal commits in series before the database's (docs/performance.md, round seven). Kept
instead as a row of ``upload_blobs`` under ``inline/<job id>``, inserted in the transaction that
inserts its job (the group committer's batch), it is durable by the same commit the row needs
anyway, and written by nothing else.

Its references work as a file's (:mod:`filejobs.jobs.files`): the ``files`` row of its content
names the key, later uploads of the same content share it, and the blob row is deleted in the
transaction that deletes the last job naming it (:func:`filejobs.jobs.files.release`). A blob
and the rows naming it come and go in the same transactions, so no crash can leave one orphaned:
there is nothing for the sweeper's orphan scan to do here.
A job's claim returns its bytes (:class:`filejobs.jobs.repository.Claimed`), which the job reads
from its workspace's scratch (:meth:`filejobs.storage.Workspace.put_input`).

Only uploads of at most ``FILEJOBS_INLINE_UPLOAD_BYTES`` (16 KiB by default; 0 turns it off) to a
local data directory are kept so: larger ones are files, as before, and an object store's sink
sends its bytes to the bucket as they come.
"""

from __future__ import annotations

from sqlalchemy import bindparam, delete, insert
from sqlmodel import Session

from filejobs.models import UploadBlob

PREFIX = "inline/"

_BLOBS = UploadBlob.__table__  # type: ignore[attr-defined]
_INSERT = insert(_BLOBS)
_DELETE = delete(_BLOBS).where(_BLOBS.c.storage_key == bindparam("b_key"))


def key_for(job_id: str) -> str:
    """The storage key of job ``job_id``'s upload kept in the database."""
    return f"{PREFIX}{job_id}"


def is_inline(key: str | None) -> bool:
    """Whether ``key`` names bytes kept in the database (not in the storage)."""
    return key is not None and key.startswith(PREFIX)


def insert_blob(session: Session, key: str, data: bytes) -> None:
    """Keep ``data`` under ``key``, in ``session``'s transaction (its job's row's)."""
    session.connection().execute(_INSERT, {"storage_key": key, "data": data})


def delete_blob(session: Session, key: str) -> None:
    """Remove the bytes under ``key``, in ``session``'s transaction (the one releasing its last job)."""
    session.connection().execute(_DELETE, {"b_key": key})
