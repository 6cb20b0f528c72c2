"""output_schema: each step's output schema stored once, referenced by attempt.schema_hash

Every attempt, successful or not, now records the schema it was validated
against, by reference; the copy each failed attempt carried moves there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 18:00:00
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def _digest(schema: object) -> str:  # as storage.models.schema_digest, frozen here
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def upgrade() -> None:
    schemas = op.create_table(
        "output_schema",
        sa.Column("hash", sa.String(length=64), primary_key=True),
        sa.Column("step", sa.String(length=100), nullable=False),
        sa.Column("schema", JSONType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("attempt") as batch:
        batch.add_column(sa.Column("schema_hash", sa.String(length=64), nullable=True))
        batch.create_foreign_key("fk_attempt_schema_hash", "output_schema", ["schema_hash"], ["hash"])
    attempt = sa.table(
        "attempt",
        sa.column("id", sa.String),
        sa.column("step", sa.String),
        sa.column("expected_schema", JSONType),
        sa.column("schema_hash", sa.String),
        sa.column("started_at", sa.DateTime(timezone=True)),
    )
    connection = op.get_bind()
    seen: set[str] = set()
    rows = connection.execute(
        sa.select(attempt.c.id, attempt.c.step, attempt.c.expected_schema, attempt.c.started_at).where(
            attempt.c.expected_schema.is_not(None)
        )
    ).all()
    for attempt_id, step, schema, started_at in rows:
        if isinstance(schema, str):  # SQLite hands JSON back as text through a lightweight table
            schema = json.loads(schema)
        digest = _digest(schema)
        if digest not in seen:
            seen.add(digest)
            op.bulk_insert(schemas, [{"hash": digest, "step": step, "schema": schema, "created_at": started_at}])
        connection.execute(sa.update(attempt).where(attempt.c.id == attempt_id).values(schema_hash=digest))
    with op.batch_alter_table("attempt") as batch:
        batch.drop_column("expected_schema")


def downgrade() -> None:
    with op.batch_alter_table("attempt") as batch:
        batch.add_column(sa.Column("expected_schema", JSONType, nullable=True))
    op.execute(
        "UPDATE attempt SET expected_schema = "
        "(SELECT schema FROM output_schema WHERE output_schema.hash = attempt.schema_hash)"
    )
    with op.batch_alter_table("attempt") as batch:
        batch.drop_constraint("fk_attempt_schema_hash", type_="foreignkey")
        batch.drop_column("schema_hash")
    op.drop_table("output_schema")
