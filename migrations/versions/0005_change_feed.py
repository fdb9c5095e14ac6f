"""change feed: an updated_at index, and NOTIFY on every job change (PostgreSQL)

The event streams look for rows changed since a time (``ix_jobs_updated_at``; a resumed
``/v1/events`` too, filtering the owner: one index fewer to keep on every write, for a rare
request). On PostgreSQL a trigger also sends
``NOTIFY filejobs_jobs`` for every insert, change (a new ``version``) and delete, so API
processes hear of changes made anywhere at once. SQLite has no such thing: there the feed polls.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION filejobs_notify_job_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('filejobs_jobs', 'D ' || OLD.id || ' ' || OLD.owner);
    ELSE
        PERFORM pg_notify('filejobs_jobs', 'U ' || NEW.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_updated_at", ["updated_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(
            "CREATE TRIGGER jobs_notify_insert_delete AFTER INSERT OR DELETE ON jobs "
            "FOR EACH ROW EXECUTE FUNCTION filejobs_notify_job_change()"
        )
        op.execute(
            "CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs FOR EACH ROW "
            "WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION filejobs_notify_job_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS jobs_notify_update ON jobs")
        op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert_delete ON jobs")
        op.execute("DROP FUNCTION IF EXISTS filejobs_notify_job_change()")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_updated_at")
