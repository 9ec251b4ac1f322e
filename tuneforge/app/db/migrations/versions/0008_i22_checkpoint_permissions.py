"""checkpoint permissions (issue 22): checkpoint_permissions, jobs.model_deleted_at

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "checkpoint_permissions",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=600), nullable=False),
        sa.Column("job_id", sa.String(length=64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("organization_id", sa.String(length=64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("grantee_id", sa.String(length=64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("model_id", "grantee_id", name="uq_checkpoint_permissions_model_grantee"),
    )
    op.create_index("ix_checkpoint_permissions_model_seq", "checkpoint_permissions", ["model_id", "seq"])
    op.create_index("ix_checkpoint_permissions_job_id", "checkpoint_permissions", ["job_id"])
    op.create_index("ix_checkpoint_permissions_grantee_id", "checkpoint_permissions", ["grantee_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model_deleted_at", TS, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("model_deleted_at")
    op.drop_index("ix_checkpoint_permissions_grantee_id", table_name="checkpoint_permissions")
    op.drop_index("ix_checkpoint_permissions_job_id", table_name="checkpoint_permissions")
    op.drop_index("ix_checkpoint_permissions_model_seq", table_name="checkpoint_permissions")
    op.drop_table("checkpoint_permissions")
