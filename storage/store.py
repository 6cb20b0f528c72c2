"""Reads and writes of the persisted record, each in its own short transaction.

Every write commits before returning: an attempt is durable the moment its
``add_attempt`` call ends, so a crash loses no finished attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.models import (
    Attempt,
    InstanceStatus,
    PromptVersion,
    StepRun,
    StepRunStatus,
    WorkflowInstance,
    utcnow,
)

__all__ = ["InstanceDetail", "Store"]


@dataclass(frozen=True)
class InstanceDetail:
    instance: WorkflowInstance
    step_runs: list[StepRun]
    attempts: list[Attempt]


class Store:
    """The database as Stepline uses it; safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._prompt_ids: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # Instances --------------------------------------------------------------------

    def create_instance(self, workflow: str, input: Any, owner: str) -> WorkflowInstance:
        instance = WorkflowInstance(workflow=workflow, input=input, owner=owner)
        with self._session() as session:
            session.add(instance)
            session.commit()
        return instance

    def set_flow_run(self, instance_id: str, flow_run_id: str) -> None:
        self._update(WorkflowInstance, instance_id, flow_run_id=flow_run_id)

    def finish_instance(
        self,
        instance_id: str,
        status: InstanceStatus,
        *,
        output: Any = None,
        failed_step: str | None = None,
        failure_class: str | None = None,
        error: str | None = None,
    ) -> None:
        now = utcnow()
        self._update(
            WorkflowInstance,
            instance_id,
            status=status.value,
            output=output,
            failed_step=failed_step,
            failure_class=failure_class,
            error=error,
            updated_at=now,
            finished_at=now,
        )

    def list_instances(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[WorkflowInstance]:
        query = select(WorkflowInstance)
        if status:
            query = query.where(WorkflowInstance.status == status)
        if workflow:
            query = query.where(WorkflowInstance.workflow == workflow)
        query = query.order_by(col(WorkflowInstance.created_at).desc()).limit(limit)
        with self._session() as session:
            return list(session.exec(query).all())

    def find_instance(self, prefix: str) -> list[WorkflowInstance]:
        """Instances whose id starts with ``prefix`` (ids are shown shortened)."""
        query = select(WorkflowInstance).where(col(WorkflowInstance.id).startswith(prefix)).limit(2)
        with self._session() as session:
            return list(session.exec(query).all())

    def instance_detail(self, instance_id: str) -> InstanceDetail | None:
        with self._session() as session:
            instance = session.get(WorkflowInstance, instance_id)
            if instance is None:
                return None
            runs = session.exec(
                select(StepRun)
                .where(StepRun.instance_id == instance_id)
                .order_by(col(StepRun.started_at), col(StepRun.index))
            ).all()
            attempts = session.exec(
                select(Attempt)
                .where(Attempt.instance_id == instance_id)
                .order_by(col(Attempt.started_at), col(Attempt.attempt_number))
            ).all()
            return InstanceDetail(instance, list(runs), list(attempts))

    def count_attempts(self, instance_id: str | None = None) -> int:
        query = select(func.count()).select_from(Attempt)
        if instance_id:
            query = query.where(Attempt.instance_id == instance_id)
        with self._session() as session:
            return int(session.exec(query).one())

    # Steps and attempts -------------------------------------------------------------

    def start_step_run(self, instance_id: str, step: str, index: int, input: Any) -> StepRun:
        run = StepRun(instance_id=instance_id, step=step, index=index, input=input)
        with self._session() as session:
            session.add(run)
            session.commit()
        return run

    def finish_step_run(
        self,
        step_run_id: str,
        status: StepRunStatus,
        *,
        attempts: int,
        model_id: str | None = None,
        output: Any = None,
        failure_class: str | None = None,
    ) -> None:
        self._update(
            StepRun,
            step_run_id,
            status=status.value,
            attempts=attempts,
            model_id=model_id,
            output=output,
            failure_class=failure_class,
            finished_at=utcnow(),
        )

    def add_attempt(self, attempt: Attempt) -> str:
        with self._session() as session:
            session.add(attempt)
            session.commit()
        return attempt.id

    def prompt_version(self, step: str, system: str, template: str, content_hash: str, author: str) -> str:
        """The id of the version with this hash, creating it on first use."""
        key = (step, content_hash)
        cached = self._prompt_ids.get(key)
        if cached is not None:
            return cached
        with self._lock:
            found = self._find_prompt(step, content_hash)
            if found is None:
                version = PromptVersion(
                    step=step, content_hash=content_hash, system=system, template=template, author=author
                )
                try:
                    with self._session() as session:
                        session.add(version)
                        session.commit()
                    found = version.id
                except IntegrityError:  # another process created it first
                    found = self._find_prompt(step, content_hash)
                    assert found is not None
            self._prompt_ids[key] = found
        return found

    def prompt_versions(self, step: str | None = None) -> Sequence[PromptVersion]:
        query = select(PromptVersion).order_by(col(PromptVersion.created_at).desc())
        if step:
            query = query.where(PromptVersion.step == step)
        with self._session() as session:
            return session.exec(query).all()

    def _find_prompt(self, step: str, content_hash: str) -> str | None:
        with self._session() as session:
            return session.exec(
                select(PromptVersion.id).where(
                    PromptVersion.step == step, PromptVersion.content_hash == content_hash
                )
            ).first()

    def _update(self, model: type[WorkflowInstance] | type[StepRun], row_id: str, **values: Any) -> None:
        with self._session() as session:
            row = session.get(model, row_id)
            if row is None:
                raise KeyError(f"no {model.__tablename__} with id {row_id}")
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)
            session.commit()
