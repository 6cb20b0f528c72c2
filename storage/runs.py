"""Step runs and attempts: each request recorded before it is sent and completed when it ends.

A step's first request writes its step run and its attempt in one commit; a
failed attempt's outcome is committed at once; a successful attempt's outcome
travels with the step run's finish. Every one of these writes is fenced
(``storage.fencing``): a worker that lost its instance records nothing more,
except its own late answer, kept for audit (``record_late_answer``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, func, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from storage.base import StoreBase, insert_rows, row_exists, row_values, update_row
from storage.fencing import Fence, guard
from storage.models import (
    Attempt,
    NewStepRun,
    OutputSchema,
    StepRun,
    StepRunStatus,
    new_id,
    schema_digest,
    utcnow,
)

__all__ = ["LATE_ANSWER", "RunStore"]

LATE_ANSWER = "superseded"
"""The failure class of a stale worker's request answered after its instance changed hands."""


class RunStore(StoreBase):
    """Step runs and attempts."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._known_schemas: set[str] = set()
        """Schema hashes this process knows are stored: each is written once, then referenced."""
        self._digests: dict[int, tuple[dict[str, Any], str]] = {}

    def start_attempt(
        self,
        fence: Fence,
        attempt: Attempt | dict[str, Any],
        *,
        step_run: NewStepRun | None = None,
        schema: dict[str, Any] | None = None,
    ) -> str:
        """Record a request about to be sent (``finished_at`` empty: in flight); its id.

        ``attempt`` is the row, or its values (the hot path: no model object);
        ``step_run`` is its step run when not yet written: the step's first
        request writes both in one commit. ``schema`` is the output schema the
        answer will be validated against, stored once and referenced by hash.
        """
        if isinstance(attempt, Attempt):
            attempt = row_values(attempt)
        values = {
            **attempt,
            "id": attempt.get("id") or new_id(),
            "started_at": attempt.get("started_at") or utcnow(),
        }
        digest = values["schema_hash"] = self._digest(schema) if schema is not None else None
        attempt_id: str = values["id"]

        def work(connection: Connection) -> str:
            guard(connection, fence)
            if digest is not None and digest not in self._known_schemas:
                _store_schema(connection, OutputSchema(hash=digest, step=values["step"], schema_=schema))
            insert_rows(connection, *([step_run.row()] if step_run is not None else []), (Attempt, values))
            connection.commit()
            if digest is not None:
                self._known_schemas.add(digest)
            return attempt_id

        def landed(connection: Connection) -> str | None:
            return attempt_id if row_exists(connection, Attempt, attempt_id) else None

        return self._run_core("recording a request before sending it", work, landed=landed)

    def _digest(self, schema: dict[str, Any]) -> str:
        """``schema_digest``, computed once per schema object (a step passes the same one each time)."""
        known = self._digests.get(id(schema))
        if known is not None and known[0] is schema:
            return known[1]
        digest = schema_digest(schema)
        self._digests[id(schema)] = (schema, digest)  # holding the schema keeps its id from being reused
        return digest

    def finish_attempt(self, fence: Fence, attempt_id: str, **values: Any) -> None:
        """Complete an in-flight attempt row with what came back."""

        def work(connection: Connection) -> None:
            guard(connection, fence)
            update_row(connection, Attempt, attempt_id, values)
            connection.commit()

        self._run_core("recording an answer", work)

    def finish_step_run(
        self,
        fence: Fence,
        step_run_id: str,
        status: StepRunStatus,
        *,
        attempts: int,
        model_id: str | None = None,
        output: Any = None,
        failure_class: str | None = None,
        insert: NewStepRun | None = None,
        last_attempt: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """End a step run, in one transaction with what is still unwritten.

        ``insert`` is the run itself when no attempt wrote it (it failed before
        any request); ``last_attempt`` is the successful attempt's outcome
        (id, values), which the run's own commit carries: one commit per step.
        """
        values = {
            "status": status.value,
            "attempts": attempts,
            "model_id": model_id,
            "output": output,
            "failure_class": failure_class,
            "finished_at": utcnow(),
        }

        def work(connection: Connection) -> None:
            guard(connection, fence)
            if insert is not None and not row_exists(connection, StepRun, insert.id):
                insert_rows(connection, insert.row(**values))
            else:
                update_row(connection, StepRun, step_run_id, values)
            if last_attempt is not None:
                attempt_id, outcome = last_attempt
                update_row(connection, Attempt, attempt_id, outcome)
            connection.commit()

        self._run_core("recording the end of a step", work)

    def record_late_answer(self, attempt_id: str, generation: int, outcome: dict[str, Any]) -> bool:
        """Keep a stale worker's late answer on its own attempt row, for audit; never applied.

        The row was closed when the instance changed hands; it gets the answer
        (raw text and body, tokens, cost: it was billed) and the class
        ``superseded``. Nothing else changes: not the step run, not the instance.
        """
        kept = {
            k: outcome[k]
            for k in (
                "raw_output",
                "raw_response",
                "truncated",
                "tokens_in",
                "tokens_out",
                "cost_usd",
                "latency_ms",
            )
            if k in outcome
        }

        def work(session: Session) -> bool:
            result = session.execute(
                update(Attempt)
                .where(col(Attempt.id) == attempt_id, col(Attempt.finished_at).is_not(None))
                .values(
                    **kept,
                    failure_class=LATE_ANSWER,
                    error_message=(
                        f"answered after this instance changed hands (sent in generation {generation} "
                        "by a worker then judged dead); kept for audit, never applied"
                    ),
                )
            )
            session.commit()
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

        return self._run("keeping a late answer", work)

    def reusable_outputs(self, instance_id: str) -> dict[tuple[str, int], Any]:
        """The newest completed output of each (step, index): what a replay need not redo."""
        query = (
            select(StepRun)
            .where(StepRun.instance_id == instance_id, StepRun.status == StepRunStatus.COMPLETED.value)
            .order_by(col(StepRun.generation))
        )
        return self._run(
            "reading completed steps",
            lambda session: {(run.step, run.index): run.output for run in session.exec(query).all()},
        )

    def supersede_from(self, fence: Fence, step: str) -> int:
        """Mark ``step``'s completed runs, and every completed run after it, to be redone."""
        instance_id = fence.instance_id

        def work(session: Session) -> int:
            guard(session, fence)
            first = session.exec(
                select(func.min(StepRun.started_at)).where(
                    StepRun.instance_id == instance_id,
                    StepRun.step == step,
                    StepRun.status == StepRunStatus.COMPLETED.value,
                )
            ).one()
            if first is None:
                session.commit()
                return 0
            result = session.execute(
                update(StepRun)
                .where(
                    col(StepRun.instance_id) == instance_id,
                    col(StepRun.status) == StepRunStatus.COMPLETED.value,
                    col(StepRun.started_at) >= first,
                )
                .values(status=StepRunStatus.SUPERSEDED.value)
            )
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]

        return self._run("marking steps to redo", work)

    def schema(self, schema_hash: str | None) -> dict[str, Any] | None:
        """The output schema stored under ``schema_hash`` (an attempt's ``schema_hash``)."""
        if schema_hash is None:
            return None
        found = self._run("reading a schema", lambda session: session.get(OutputSchema, schema_hash))
        return found.schema_ if found is not None else None

    def last_attempt(self, step_run_id: str) -> Attempt | None:
        query = (
            select(Attempt)
            .where(Attempt.step_run_id == step_run_id)
            .order_by(col(Attempt.attempt_number).desc())
        )
        return self._run("reading an attempt", lambda session: session.exec(query).first())

    def last_attempt_of_step(self, instance_id: str, step: str) -> Attempt | None:
        """The newest attempt at ``step`` in an instance (any generation)."""
        query = (
            select(Attempt)
            .where(Attempt.instance_id == instance_id, Attempt.step == step)
            .order_by(col(Attempt.started_at).desc(), col(Attempt.attempt_number).desc())
        )
        return self._run("reading an attempt", lambda session: session.exec(query).first())


def _store_schema(connection: Connection, row: OutputSchema) -> None:
    """Insert a schema unless another attempt (any process) stored the same one first."""
    values = {"hash": row.hash, "step": row.step, "schema": row.schema_, "created_at": row.created_at}
    table = OutputSchema.__table__  # type: ignore[attr-defined]
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        connection.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
    elif connection.execute(core_select(table.c.hash).where(table.c.hash == row.hash)).first() is None:
        connection.execute(insert(table).values(**values))
