"""change feed: NOTIFY job changes only while an API process listens (PostgreSQL)

Migration 0005's trigger sent ``NOTIFY filejobs_jobs`` for every insert, visible change and delete
of a job. A notifying commit takes a cluster-wide lock (so that notifications are queued in commit
order) and holds it through its WAL flush: every upload's insert, claim and finish waited for every
other's durable commit, and each listening backend was woken by each of them. Only an API process
with an event stream open reads those notifications (``filejobs.events.feed``): it now records
itself in ``change_listeners`` (renewed while it listens, gone or expired after), and the trigger
notifies only while a row there is current. A writer whose trigger ran before a listener's row
committed is waited for by that listener (every transaction in progress when its row committed) before
it reads the rows changed meanwhile, so no change is missed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 01:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import filejobs.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Migration 0005's function, with ``{guard}`` where this one checks for a current listener.
_FUNCTION = """
CREATE OR REPLACE FUNCTION filejobs_notify_job_change() RETURNS trigger AS $$
BEGIN{guard}
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('filejobs_jobs', 'D ' || OLD.id || ' ' || OLD.owner);
    ELSE
        PERFORM pg_notify('filejobs_jobs', 'U ' || NEW.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""
#: VOLATILE (the default): its query takes a new snapshot, so it sees a listener's row committed
#: after the writer's statement began.
NOTIFY_FUNCTION = _FUNCTION.format(
    guard="""
    IF NOT EXISTS (SELECT 1 FROM change_listeners WHERE expires_at > clock_timestamp()) THEN
        RETURN NULL;
    END IF;"""
)
NOTIFY_ALWAYS = _FUNCTION.format(guard="")


def upgrade() -> None:
    op.create_table(
        "change_listeners",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("expires_at", filejobs.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_listeners")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_ALWAYS)
    op.drop_table("change_listeners")
