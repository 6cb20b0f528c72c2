"""workflow_instance.fence: the fencing token every worker write for an instance is checked against

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_instance") as batch:
        batch.add_column(sa.Column("fence", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("workflow_instance") as batch:
        batch.drop_column("fence")
