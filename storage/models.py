"""The persisted record: workflow instances, step runs, attempts, prompt versions, probes.

Tables are created and upgraded only by the Alembic migrations in
``storage/migrations``; these classes describe the same schema for queries.
Enumerated values (status, failure class) are stored as plain strings so
that storage does not depend on the step runtime's types.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Dialect, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import Field, SQLModel

from storage.escaping import escape_json, escape_text, unescape_json, unescape_text
from storage.states import REPLAYABLE, InstanceStatus, ReviewStatus, StepRunStatus

__all__ = [
    "REPLAYABLE",
    "Attempt",
    "ConsistencyRun",
    "InstanceStatus",
    "NewStepRun",
    "Notification",
    "OutputSchema",
    "PromptCurrent",
    "PromptVersion",
    "ReviewItem",
    "ReviewStatus",
    "StepRun",
    "StepRunStatus",
    "WorkflowInstance",
    "as_utc",
    "schema_digest",
]


class EscapedText(TypeDecorator[str]):
    """``Text`` that holds any Python string: what a database refuses is stored escaped
    (``storage.escaping``) and read back as it was written. The column is plain ``TEXT``."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else escape_text(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else unescape_text(value)


class EscapedJSON(TypeDecorator[Any]):
    """JSON (``JSONB`` on PostgreSQL) whose strings may hold anything, as ``EscapedText``.

    PostgreSQL refuses NUL and unpaired surrogates in ``jsonb`` even as ``\\u`` escapes; SQLite
    would take them, but both go through the same escape so one code path is tested on both.
    """

    impl = JSON
    cache_ok = True
    should_evaluate_none = True
    """As ``JSON``'s: ``None`` is stored as JSON ``null``, as before this type."""

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else escape_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else unescape_json(value)


JSONType = EscapedJSON()


def schema_digest(schema: Any) -> str:
    """SHA-256 of a JSON schema in canonical form: the key it is stored under, once."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class _RandomIds:
    """Random 128-bit hex ids, taken from one ``os.urandom`` call per 256 ids.

    Why not ``uuid4()`` each time: ``os.urandom`` releases the GIL, and on a step's
    path with busy threads around, getting it back cost ~0.1-0.2 ms per id
    (bench/overhead.py --profile). The ids are as random as uuid4's; the buffer is
    refilled in a child after fork, so no two processes share ids.
    """

    BATCH = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._at = b"", 0

    def next(self) -> str:
        with self._lock:
            if self._at >= len(self._buffer):
                self._buffer, self._at = os.urandom(16 * self.BATCH), 0
            chunk = self._buffer[self._at : self._at + 16]
            self._at += 16
        return uuid.UUID(bytes=chunk, version=4).hex


_IDS = _RandomIds()


def new_id() -> str:
    """A fresh row id: a random UUID version 4 as 32 hex digits."""
    return _IDS.next()


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(when: datetime) -> datetime:
    """A stored time as an aware UTC datetime: SQLite hands them back naive (written in UTC)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSONType, nullable=nullable))


def _time(nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index),
    )


class WorkflowInstance(SQLModel, table=True):
    __tablename__ = "workflow_instance"
    __table_args__ = (
        Index("ix_instance_status_created", "status", "created_at"),
        Index("ix_instance_workflow_source_digest", "workflow", "source_digest"),
        Index("ix_instance_created", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    workflow: str = Field(index=True, max_length=100)
    input: Any = _json(nullable=False)
    source: str | None = Field(default=None, max_length=500)
    """Where the input came from in a batch: a file, or ``file.jsonl:line``."""
    source_digest: str | None = Field(default=None, max_length=64)
    """SHA-256 of the input's bytes: how a watched folder knows which files it has run."""
    status: str = Field(default=InstanceStatus.RUNNING.value, max_length=20)
    owner: str = Field(max_length=200)
    flow_run_id: str | None = Field(default=None, max_length=64)
    output: Any = _json()
    failed_step: str | None = Field(default=None, max_length=100)
    failure_class: str | None = Field(default=None, max_length=32)
    error: str | None = Field(default=None, sa_column=Column(EscapedText()))
    generation: int = 0
    """0 for the first run, then +1 per replay (each replay's step runs carry it)."""
    worker: str | None = Field(default=None, max_length=200)
    """``host:pid:nonce`` of the process running it (or that last ran it, or holds it queued)."""
    heartbeat_at: datetime | None = _time()
    """Renewed by that process while it runs the instance: a stale one means the worker died."""
    fence: int = 0
    """The fencing token: +1 whenever the instance changes hands (leased, recovered, stopped,
    replayed, decided in review). Every write a worker makes for the instance names the token
    it was given and is refused once it changed (``storage.fencing``), so a worker that was
    only frozen, not dead, cannot overwrite what its successor did."""

    @property
    def held(self) -> bool:
        """Whether a worker holds it under a lease: running, or queued and taken by a flow run."""
        return self.status == InstanceStatus.RUNNING.value or (
            self.status == InstanceStatus.QUEUED.value and self.worker is not None
        )

    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    finished_at: datetime | None = _time()


class PromptVersion(SQLModel, table=True):
    __tablename__ = "prompt_version"
    __table_args__ = (UniqueConstraint("step", "content_hash", name="uq_prompt_step_hash"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    step: str = Field(index=True, max_length=100)
    content_hash: str = Field(max_length=64)
    system: str = Field(sa_column=Column(EscapedText(), nullable=False))
    template: str = Field(sa_column=Column(EscapedText(), nullable=False))
    author: str = Field(max_length=200)
    note: str | None = Field(default=None, sa_column=Column(EscapedText()))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class PromptCurrent(SQLModel, table=True):
    """The prompt an operator chose for a step, used instead of the one in code until cleared."""

    __tablename__ = "prompt_current"

    step: str = Field(primary_key=True, max_length=100)
    prompt_version_id: str = Field(foreign_key="prompt_version.id", max_length=32)
    set_by: str = Field(max_length=200)
    set_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class StepRun(SQLModel, table=True):
    """One execution of a step within an instance (``index`` counts repeats, e.g. per clause)."""

    __tablename__ = "step_run"
    __table_args__ = (UniqueConstraint("instance_id", "step", "index", "generation", name="uq_step_run_key"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    instance_id: str = Field(foreign_key="workflow_instance.id", index=True, max_length=32)
    step: str = Field(max_length=100)
    index: int = 0
    generation: int = 0
    status: str = Field(default=StepRunStatus.RUNNING.value, max_length=20)
    model_id: str | None = Field(default=None, max_length=100)
    input: Any = _json()
    output: Any = _json()
    failure_class: str | None = Field(default=None, max_length=32)
    attempts: int = 0
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    finished_at: datetime | None = _time()


@dataclass(frozen=True, slots=True)
class NewStepRun:
    """A step run about to be written: its values, without a ``StepRun`` object.

    On every step's path: building a table model object cost about 0.17 ms (pydantic
    inspects each default factory's signature on every construction, and SQLAlchemy
    instruments each attribute set), more than the INSERT that writes it.
    """

    instance_id: str
    step: str
    index: int = 0
    input: Any = None
    generation: int = 0
    id: str = field(default_factory=new_id)
    started_at: datetime = field(default_factory=utcnow)

    def row(self, **values: Any) -> tuple[type[StepRun], dict[str, Any]]:
        """The row to INSERT (``storage.base.insert_rows``): running, or as ``values`` say."""
        return StepRun, {
            "id": self.id,
            "instance_id": self.instance_id,
            "step": self.step,
            "index": self.index,
            "generation": self.generation,
            "input": self.input,
            "status": StepRunStatus.RUNNING.value,
            "attempts": 0,
            "started_at": self.started_at,
            **values,
        }


class Attempt(SQLModel, table=True):
    """One request to a model: what was sent, what came back byte-for-byte, and the verdict."""

    __tablename__ = "attempt"
    __table_args__ = (
        UniqueConstraint("step_run_id", "attempt_number", name="uq_attempt_number"),
        Index("ix_attempt_failure_started", "failure_class", "started_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    instance_id: str = Field(foreign_key="workflow_instance.id", index=True, max_length=32)
    step_run_id: str = Field(foreign_key="step_run.id", index=True, max_length=32)
    step: str = Field(max_length=100)
    attempt_number: int
    provider: str = Field(max_length=100)
    model_id: str = Field(max_length=100)
    provider_model: str = Field(max_length=200)
    routing_reason: str | None = Field(default=None, sa_column=Column(EscapedText()))
    prompt_version_id: str = Field(foreign_key="prompt_version.id", max_length=32)
    sampling: Any = _json()
    request_messages: Any = _json()
    raw_output: str | None = Field(default=None, sa_column=Column(EscapedText()))
    raw_response: str | None = Field(default=None, sa_column=Column(EscapedText()))
    parsed_output: Any = _json()
    schema_hash: str | None = Field(default=None, foreign_key="output_schema.hash", max_length=64)
    """The output schema this attempt was validated against (``OutputSchema``), successful or not."""
    failure_class: str | None = Field(default=None, max_length=32)
    error_message: str | None = Field(default=None, sa_column=Column(EscapedText()))
    validation_errors: Any = _json()
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    retry_after_s: float | None = None
    wait_s: float | None = None
    pii: Any = _json()
    """Personal data kept out of the request, by kind and count, never the values:
    ``{"redacted": {"name": 2}, "blocked": {"iban": 1}}``."""
    truncated: Any = _json()
    """Raw texts cut to ``max_stored_bytes`` before storing: ``{"raw_response": 31457280}``, each
    with its size as received in UTF-8 bytes; None when everything was stored whole."""
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    finished_at: datetime | None = _time()

    @property
    def outcome(self) -> str:
        """``ok``, the failure class, or ``in flight`` (sent, no answer recorded yet)."""
        if self.failure_class:
            return self.failure_class
        return "ok" if self.finished_at is not None else "in flight"


class OutputSchema(SQLModel, table=True):
    """A step's output JSON schema, stored once per distinct text and referenced by attempts."""

    __tablename__ = "output_schema"

    hash: str = Field(primary_key=True, max_length=64)
    """``schema_digest(schema)``."""
    step: str = Field(max_length=100)
    """The step that first sent it (the same model may serve several)."""
    schema_: Any = Field(default=None, sa_column=Column("schema", JSONType, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ReviewItem(SQLModel, table=True):
    """A step output a human must correct or reject before the instance may advance."""

    __tablename__ = "review_item"
    __table_args__ = (Index("ix_review_status_created", "status", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    instance_id: str = Field(foreign_key="workflow_instance.id", index=True, max_length=32)
    step_run_id: str = Field(foreign_key="step_run.id", max_length=32)
    step: str = Field(max_length=100)
    index: int = 0
    failure_class: str = Field(max_length=32)
    raw_output: str | None = Field(default=None, sa_column=Column(EscapedText()))
    expected_schema: Any = _json()
    validation_errors: Any = _json()
    status: str = Field(default=ReviewStatus.OPEN.value, max_length=20)
    output: Any = _json()
    decided_by: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, sa_column=Column(EscapedText()))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    decided_at: datetime | None = _time()


class Notification(SQLModel, table=True):
    """One message to an instance's owner, with whether it was delivered."""

    __tablename__ = "notification"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    instance_id: str = Field(foreign_key="workflow_instance.id", index=True, max_length=32)
    event: str = Field(max_length=32)
    target: str = Field(max_length=300)
    """The target's scheme and a short hash of its URL only: Apprise URLs can embed tokens."""
    title: str = Field(max_length=300)
    body: str = Field(sa_column=Column(EscapedText(), nullable=False))
    delivered: bool = False
    error: str | None = Field(default=None, sa_column=Column(EscapedText()))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ConsistencyRun(SQLModel, table=True):
    """One ``stepline consistency`` probe: a step sampled N times on one input, per-field agreement.

    The samples themselves are not stored (they made no instance); what they agreed on is.
    ``compare_*`` hold the same figures at the ``--temperature`` asked for, when one was.
    """

    __tablename__ = "consistency_run"
    __table_args__ = (Index("ix_consistency_step_created", "step", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    workflow: str = Field(max_length=100)
    step: str = Field(max_length=100)
    input_digest: str = Field(max_length=64)
    """SHA-256 of the step input's canonical JSON (``steps.consistency.input_digest``)."""
    samples: int
    """Samples per temperature."""
    threshold: float
    """The step's ``consistency_threshold`` at the time."""
    temperature: float | None = None
    """The step's configured (effective) temperature."""
    agreement: Any = _json(nullable=False)
    """Per field (dotted path): ``{"kind", "agreement", "distinct", "values": [[value, count]]}``."""
    failed: int = 0
    verdict: str = Field(max_length=20)
    """``consistent`` or ``inconsistent``, at the configured sampling."""
    compare_temperature: float | None = None
    compare_agreement: Any = _json()
    compare_failed: int | None = None
    compare_verdict: str | None = Field(default=None, max_length=20)
    model_id: str = Field(max_length=300)
    """The catalog model(s) that answered, most samples first, comma-separated."""
    prompt_version_id: str | None = Field(default=None, foreign_key="prompt_version.id", max_length=32)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
