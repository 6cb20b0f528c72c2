"""Figures over the record: spend, latency per model, attempt counts."""

from __future__ import annotations

import statistics

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from storage.base import StoreBase
from storage.models import Attempt, WorkflowInstance

__all__ = ["ReportStore"]


class ReportStore(StoreBase):
    """Read-only aggregates, for `stepline costs` and for routing by observed latency."""

    def costs(self) -> list[tuple[str, str, str, int, int, int, float]]:
        """(workflow, step, model, attempts, tokens in, tokens out, USD), most expensive first."""
        cost = func.coalesce(func.sum(col(Attempt.cost_usd)), 0.0)
        query = (
            sa_select(
                col(WorkflowInstance.workflow),
                col(Attempt.step),
                col(Attempt.model_id),
                func.count(),
                func.coalesce(func.sum(col(Attempt.tokens_in)), 0),
                func.coalesce(func.sum(col(Attempt.tokens_out)), 0),
                cost,
            )
            .join(WorkflowInstance, col(WorkflowInstance.id) == col(Attempt.instance_id))
            .group_by(col(WorkflowInstance.workflow), col(Attempt.step), col(Attempt.model_id))
            .order_by(cost.desc())
        )

        def work(session: Session) -> list[tuple[str, str, str, int, int, int, float]]:
            return [
                (w, s, m, int(n), int(i), int(o), float(c))
                for w, s, m, n, i, o, c in session.execute(query).all()
            ]

        return self._run("adding up costs", work)

    def median_latency_by_model(self, recent: int = 5000) -> dict[str, float]:
        """Median latency (ms) of each model's recent successful attempts, for routing."""
        query = (
            select(Attempt.model_id, Attempt.latency_ms)
            .where(col(Attempt.failure_class).is_(None), col(Attempt.latency_ms).is_not(None))
            .order_by(col(Attempt.started_at).desc())
            .limit(recent)
        )

        def work(session: Session) -> dict[str, float]:
            samples: dict[str, list[float]] = {}
            for model_id, latency in session.exec(query).all():
                samples.setdefault(model_id, []).append(float(latency or 0.0))
            return {model_id: statistics.median(values) for model_id, values in samples.items()}

        return self._run("reading latencies", work)

    def count_attempts(self, instance_id: str | None = None) -> int:
        query = select(func.count()).select_from(Attempt)
        if instance_id:
            query = query.where(Attempt.instance_id == instance_id)
        return self._run("counting attempts", lambda session: int(session.exec(query).one()))
