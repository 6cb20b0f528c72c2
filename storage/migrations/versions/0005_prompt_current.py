"""prompt_current: the prompt version an operator chose for a step

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


def downgrade() -> None:
    op.drop_table("prompt_current")
