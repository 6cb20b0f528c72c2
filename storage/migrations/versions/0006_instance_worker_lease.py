"""workflow_instance.worker and heartbeat_at: which process runs an instance, and whether it lives

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 07:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_instance") as batch:
        batch.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_instance") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("worker")
