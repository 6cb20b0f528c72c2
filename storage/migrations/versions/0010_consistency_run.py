"""consistency_run: each `stepline consistency` probe's per-field agreement and verdict

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "consistency_run",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=False),
        sa.Column("input_digest", sa.String(length=64), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("agreement", JSONType, nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=False),
        sa.Column("compare_temperature", sa.Float(), nullable=True),
        sa.Column("compare_agreement", JSONType, nullable=True),
        sa.Column("compare_failed", sa.Integer(), nullable=True),
        sa.Column("compare_verdict", sa.String(length=20), nullable=True),
        sa.Column("model_id", sa.String(length=300), nullable=False),
        sa.Column("prompt_version_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prompt_version_id"], ["prompt_version.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    # The TUI and `stepline consistency` read a step's newest probes.
    op.create_index("ix_consistency_step_created", "consistency_run", ["step", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_consistency_step_created", table_name="consistency_run")
    op.drop_table("consistency_run")
