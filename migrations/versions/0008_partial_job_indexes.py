"""jobs: partial indexes for the queries that reach one status, two listing indexes dropped

Every status change of a job is a non-HOT update on PostgreSQL (``updated_at`` is indexed), which
adds an entry to every index whose predicate the new row meets: with 13 indexes, 13 entries per
claim and per finish. Now:

* the sweeper's indexes hold only the rows it looks for: ``ix_jobs_queued_run_after`` (due jobs,
  ``status = 'queued'``), ``ix_jobs_running_lease_expires_at`` (leases, ``status = 'running'``),
  ``ix_jobs_finished_at`` (retention, ``finished_at IS NOT NULL``: set on final statuses only);
* ``ix_jobs_output_key`` holds only jobs with an output, and on PostgreSQL with
  ``varchar_pattern_ops``: its one query is a prefix ``LIKE``, which a default-collation index
  cannot serve unless the collation is ``C`` (it scanned the whole index); ``ix_jobs_reuse`` holds
  only succeeded jobs (without the status column);
* ``ix_jobs_status_id`` and ``ix_jobs_processor_id`` go: the listing always filters one owner
  (``ix_jobs_owner_*``), and nothing else walked them.

A claim now writes 7 index entries and a finish 9. The queries that use a partial index on a
status say it with a literal (a bound parameter cannot prove the predicate in a generic plan).
SQLite has partial indexes too, with the same predicates.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:40:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name → (columns, predicate or None), before and after.
BEFORE: dict[str, tuple[list[str], str | None]] = {
    "ix_jobs_status_id": (["status", "id"], None),
    "ix_jobs_processor_id": (["processor", "id"], None),
    "ix_jobs_status_run_after": (["status", "run_after"], None),
    "ix_jobs_status_lease_expires_at": (["status", "lease_expires_at"], None),
    "ix_jobs_status_finished_at": (["status", "finished_at"], None),
    "ix_jobs_output_key": (["output_key"], None),
    "ix_jobs_reuse": (["owner", "file_sha256", "processor", "params_digest", "status"], None),
}
AFTER: dict[str, tuple[list[str], str | None]] = {
    "ix_jobs_queued_run_after": (["run_after"], "status = 'queued'"),
    "ix_jobs_running_lease_expires_at": (["lease_expires_at"], "status = 'running'"),
    "ix_jobs_finished_at": (["finished_at"], "finished_at IS NOT NULL"),
    "ix_jobs_output_key": (["output_key"], "output_key IS NOT NULL"),
    "ix_jobs_reuse": (["owner", "file_sha256", "processor", "params_digest"], "status = 'succeeded'"),
}


def _swap(
    drop: dict[str, tuple[list[str], str | None]], create: dict[str, tuple[list[str], str | None]]
) -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name in drop:
            batch_op.drop_index(name)
        for name, (columns, predicate) in create.items():
            where: dict[str, Any] = {}
            if predicate is not None:
                where = {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}
            if name == "ix_jobs_output_key" and predicate is not None:
                where["postgresql_ops"] = {"output_key": "varchar_pattern_ops"}
            batch_op.create_index(name, columns, unique=False, **where)


def upgrade() -> None:
    _swap(BEFORE, AFTER)


def downgrade() -> None:
    _swap(AFTER, BEFORE)
