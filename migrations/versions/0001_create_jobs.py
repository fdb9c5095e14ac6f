"""create jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-23 15:24:45.712138
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import filejobs.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("processor", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("file_name", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("file_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("file_content_type", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("declared_content_type", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("storage_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("output_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("output_name", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
        sa.Column("output_content_type", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("error_message", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", filejobs.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", filejobs.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", filejobs.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", filejobs.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("run_after", filejobs.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("lease_expires_at", filejobs.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_processor_id", ["processor", "id"], unique=False)
        batch_op.create_index("ix_jobs_status_finished_at", ["status", "finished_at"], unique=False)
        batch_op.create_index("ix_jobs_status_id", ["status", "id"], unique=False)
        batch_op.create_index("ix_jobs_status_lease_expires_at", ["status", "lease_expires_at"], unique=False)
        batch_op.create_index("ix_jobs_status_run_after", ["status", "run_after"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_run_after")
        batch_op.drop_index("ix_jobs_status_lease_expires_at")
        batch_op.drop_index("ix_jobs_status_id")
        batch_op.drop_index("ix_jobs_status_finished_at")
        batch_op.drop_index("ix_jobs_processor_id")

    op.drop_table("jobs")
