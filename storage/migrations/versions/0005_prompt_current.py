"""prompt_current: the prompt version an operator chose for a step; instances by creation time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 05:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_current",
        sa.Column("step", sa.String(length=100), nullable=False),
        sa.Column("prompt_version_id", sa.String(length=32), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prompt_version_id"], ["prompt_version.id"]),
        sa.PrimaryKeyConstraint("step"),
    )
    # The TUI's first page, newest first with no filter, reads this index and nothing else.
    op.create_index("ix_instance_created", "workflow_instance", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_instance_created", table_name="workflow_instance")
    op.drop_table("prompt_current")
