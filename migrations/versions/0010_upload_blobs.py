"""upload blobs: small uploads' bytes kept in the database, committed with their job's row

A small upload that arrives whole (at most ``FILEJOBS_INLINE_UPLOAD_BYTES``) is no longer written
as a file of its own (create, write, fsync, link, and the directory's fsync before its row could
commit): its bytes are a row of ``upload_blobs``, inserted in the transaction that inserts its
job, so the commit the row needs anyway makes them durable too. Its key is ``inline/<job id>``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "upload_blobs",
        sa.Column("storage_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("storage_key", name=op.f("pk_upload_blobs")),
    )


def downgrade() -> None:
    # The bytes of the uploads kept here are nowhere else: refuse rather than lose them.
    kept = op.get_bind().execute(sa.text("SELECT count(*) FROM upload_blobs")).scalar()
    if kept:
        raise RuntimeError(
            f"{kept} upload(s) are kept in the database (upload_blobs): downgrading below 0010 would "
            "lose their bytes. Delete their jobs first, or stay at 0010."
        )
    op.drop_table("upload_blobs")
