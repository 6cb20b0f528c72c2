"""review items, notifications, replay generations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:31:36.362553
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notification',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=300), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('delivered', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['workflow_instance.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_instance_id'), ['instance_id'], unique=False)

    op.create_table('review_item',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('step_run_id', sa.String(length=32), nullable=False),
    sa.Column('step', sa.String(length=100), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('failure_class', sa.String(length=32), nullable=False),
    sa.Column('raw_output', sa.Text(), nullable=True),
    sa.Column('expected_schema', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('validation_errors', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('output', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['workflow_instance.id'], ),
    sa.ForeignKeyConstraint(['step_run_id'], ['step_run.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('review_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_item_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index('ix_review_status_created', ['status', 'created_at'], unique=False)

    with op.batch_alter_table('step_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('generation', sa.Integer(), nullable=False, server_default='0'))
        batch_op.drop_constraint(batch_op.f('uq_step_run_key'), type_='unique')
        batch_op.create_unique_constraint('uq_step_run_key', ['instance_id', 'step', 'index', 'generation'])

    with op.batch_alter_table('workflow_instance', schema=None) as batch_op:
        batch_op.add_column(sa.Column('generation', sa.Integer(), nullable=False, server_default='0'))



def downgrade() -> None:
    with op.batch_alter_table('workflow_instance', schema=None) as batch_op:
        batch_op.drop_column('generation')

    with op.batch_alter_table('step_run', schema=None) as batch_op:
        batch_op.drop_constraint('uq_step_run_key', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_step_run_key'), ['instance_id', 'step', 'index'])
        batch_op.drop_column('generation')

    with op.batch_alter_table('review_item', schema=None) as batch_op:
        batch_op.drop_index('ix_review_status_created')
        batch_op.drop_index(batch_op.f('ix_review_item_instance_id'))

    op.drop_table('review_item')
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_instance_id'))

    op.drop_table('notification')
