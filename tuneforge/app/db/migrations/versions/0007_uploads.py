"""uploads in parts: uploads, upload_parts

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("mime_type", sa.String(length=255), nullable=False),
        sa.Column("bytes", SEQ, nullable=False),
        sa.Column("received_bytes", SEQ, nullable=False),
        sa.Column("n_parts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("completing_since", TS, nullable=True),
        sa.Column("file_id", sa.String(length=64), nullable=True),
        sa.Column("parts_removed", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_uploads_org_status", "uploads", ["organization_id", "status"])
    op.create_index("ix_uploads_status_expires", "uploads", ["status", "expires_at"])
    op.create_index("ix_uploads_parts_removed", "uploads", ["parts_removed", "status"])

    op.create_table(
        "upload_parts",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("bytes", SEQ, nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_upload_parts_upload", "upload_parts", ["upload_id"])


def downgrade() -> None:
    op.drop_index("ix_upload_parts_upload", table_name="upload_parts")
    op.drop_table("upload_parts")
    op.drop_index("ix_uploads_parts_removed", table_name="uploads")
    op.drop_index("ix_uploads_status_expires", table_name="uploads")
    op.drop_index("ix_uploads_org_status", table_name="uploads")
    op.drop_table("uploads")
