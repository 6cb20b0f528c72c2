"""Consistency probes: their stored results, and the stored answers ``--from-history`` compares."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from storage.base import StoreBase, insert_rows
from storage.models import Attempt, ConsistencyRun, StepRun, WorkflowInstance

__all__ = ["ConsistencyStore"]


class ConsistencyStore(StoreBase):
    """``stepline consistency`` results (written once each) and read-only history for it."""

    def add_consistency_run(self, run: ConsistencyRun) -> str:
        def work(session: Session) -> str:
            insert_rows(session, run)
            session.commit()
            return run.id

        return self._run("recording a consistency probe", work)

    def consistency_runs(self, step: str | None = None, limit: int = 20) -> list[ConsistencyRun]:
        """The newest probes, of one step or of all."""
        query = select(ConsistencyRun).order_by(col(ConsistencyRun.created_at).desc()).limit(limit)
        if step:
            query = query.where(ConsistencyRun.step == step)
        return self._run("reading consistency probes", lambda session: list(session.exec(query).all()))

    def latest_consistency(self) -> dict[str, ConsistencyRun]:
        """Each probed step's newest probe, by step name."""
        newest = (
            sa_select(col(ConsistencyRun.step), func.max(col(ConsistencyRun.created_at)).label("at"))
            .group_by(col(ConsistencyRun.step))
            .subquery()
        )
        query = select(ConsistencyRun).join(
            newest,
            (col(ConsistencyRun.step) == newest.c.step) & (col(ConsistencyRun.created_at) == newest.c.at),
        )

        def work(session: Session) -> dict[str, ConsistencyRun]:
            return {run.step: run for run in session.exec(query).all()}

        return self._run("reading consistency probes", work)

    def step_answers(self, workflow: str, step: str, limit: int = 50_000) -> list[tuple[Any, Any, str]]:
        """``(step input, model output, model id)`` of the step's successful attempts in the
        workflow's instances, newest first.

        Attempts, not step runs: a step run an operator completed in review holds a person's
        correction, not an answer of the model.
        """
        query = (
            sa_select(col(StepRun.input), col(Attempt.parsed_output), col(Attempt.model_id))
            .join(StepRun, col(StepRun.id) == col(Attempt.step_run_id))
            .join(WorkflowInstance, col(WorkflowInstance.id) == col(Attempt.instance_id))
            .where(
                col(WorkflowInstance.workflow) == workflow,
                col(Attempt.step) == step,
                col(Attempt.failure_class).is_(None),
            )
            .order_by(col(Attempt.started_at).desc())
            .limit(limit)
        )

        def work(session: Session) -> list[tuple[Any, Any, str]]:
            return [(given, output, model_id) for given, output, model_id in session.execute(query).all()]

        return self._run("reading a step's answers", work)
