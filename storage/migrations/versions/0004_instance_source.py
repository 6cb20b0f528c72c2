"""workflow_instance.source and source_digest: which batch item an instance came from

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 04:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("source_digest", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_instance_workflow_source_digest", ["workflow", "source_digest"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("workflow_instance", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_workflow_source_digest")
        batch_op.drop_column("source_digest")
        batch_op.drop_column("source")
