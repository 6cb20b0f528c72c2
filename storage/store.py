"""Reads and writes of the persisted record, each in its own short transaction.

Every write commits before returning. An attempt's row is written when its
request is about to be sent (``start_attempt``) and completed when it ends
(``finish_attempt``): a worker killed mid-request leaves a row that says so,
and a crash loses no attempt, finished or not.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from storage.models import (
    REPLAYABLE,
    Attempt,
    InstanceStatus,
    Notification,
    PromptCurrent,
    PromptVersion,
    ReviewItem,
    ReviewStatus,
    StepRun,
    StepRunStatus,
    WorkflowInstance,
    utcnow,
)

__all__ = ["InstanceDetail", "Store"]

_HELD = (InstanceStatus.RUNNING.value, InstanceStatus.QUEUED.value)
"""Statuses in which a worker holds an instance under a lease."""

_WITHOUT_PAYLOADS = (defer(WorkflowInstance.input), defer(WorkflowInstance.output))
"""For the recovery scans every flow run makes as it starts: they judge leases and flow runs,
and a backlog's inputs (up to 1 MB each) need not come along."""


@dataclass(frozen=True)
class InstanceDetail:
    instance: WorkflowInstance
    step_runs: list[StepRun]
    attempts: list[Attempt]


class Store:
    """The database as Stepline uses it; safe to share between threads."""

    CURRENT_PROMPT_TTL_S = 1.0
    """How long a step's chosen prompt is reused before it is read again (it is read per step run)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._prompt_ids: dict[tuple[str, str], str] = {}
        self._current: dict[str, tuple[float, PromptVersion | None]] = {}
        self._lock = threading.Lock()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # Instances --------------------------------------------------------------------

    def create_instance(
        self,
        workflow: str,
        input: Any,
        owner: str,
        *,
        source: str | None = None,
        source_digest: str | None = None,
        worker: str | None = None,
    ) -> WorkflowInstance:
        instance = WorkflowInstance(
            workflow=workflow,
            input=input,
            owner=owner,
            source=source,
            source_digest=source_digest,
            worker=worker,
            heartbeat_at=utcnow() if worker else None,
        )
        with self._session() as session:
            session.add(instance)
            session.commit()
        return instance

    def create_queued(
        self, workflow: str, items: Sequence[tuple[Any, str | None, str | None]], owner: str
    ) -> list[WorkflowInstance]:
        """Instances of ``workflow`` waiting for a worker, one per ``(input, source, digest)``.

        One transaction: a submission is recorded whole or not at all.
        """
        instances = [
            WorkflowInstance(
                workflow=workflow,
                input=input,
                owner=owner,
                source=source,
                source_digest=digest,
                status=InstanceStatus.QUEUED.value,
            )
            for input, source, digest in items
        ]
        with self._session() as session:
            session.add_all(instances)
            session.commit()
        return instances

    def set_flow_run(self, instance_id: str, flow_run_id: str) -> None:
        self._update(WorkflowInstance, instance_id, flow_run_id=flow_run_id)

    def set_queued_flow_run(self, instance_ids: Sequence[str], flow_run_id: str) -> None:
        """Record which flow run was asked to run these queued instances."""
        with self._session() as session:
            session.execute(
                update(WorkflowInstance)
                .where(
                    col(WorkflowInstance.id).in_(list(instance_ids)),
                    *_unleased(),
                )
                .values(flow_run_id=flow_run_id)
            )
            session.commit()

    def lease_queued(self, instance_ids: Sequence[str], worker: str) -> list[str]:
        """Take a lease on those of these queued instances no one holds; the ids now held.

        A flow run leases all of its instances when it starts, so that if its
        worker dies, the ones it had not started yet are recovered like the
        ones it was running.
        """
        ids = list(instance_ids)
        if not ids:
            return []
        with self._session() as session:
            session.execute(
                update(WorkflowInstance)
                .where(
                    col(WorkflowInstance.id).in_(ids),
                    *_unleased(),
                )
                .values(worker=worker, heartbeat_at=utcnow())
            )
            session.commit()
            held = set(
                session.exec(
                    select(WorkflowInstance.id).where(
                        col(WorkflowInstance.id).in_(ids),
                        col(WorkflowInstance.status) == InstanceStatus.QUEUED.value,
                        col(WorkflowInstance.worker) == worker,
                    )
                ).all()
            )
        return [i for i in ids if i in held]

    def start_queued(self, instance_id: str, worker: str) -> bool:
        """Move a queued instance this worker leased to running; False if it was taken back."""
        with self._session() as session:
            result = session.execute(
                update(WorkflowInstance)
                .where(
                    col(WorkflowInstance.id) == instance_id,
                    col(WorkflowInstance.status) == InstanceStatus.QUEUED.value,
                    col(WorkflowInstance.worker) == worker,
                )
                .values(status=InstanceStatus.RUNNING.value, heartbeat_at=utcnow(), updated_at=utcnow())
            )
            session.commit()
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def unleased_queued(self, limit: int = 10_000) -> list[WorkflowInstance]:
        """Queued instances no flow run has taken yet, oldest first."""
        query = (
            select(WorkflowInstance)
            .where(*_unleased())
            .options(*_WITHOUT_PAYLOADS)
            .order_by(col(WorkflowInstance.created_at))
            .limit(limit)
        )
        with self._session() as session:
            return list(session.exec(query).all())

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
            finished_at=now if status in (InstanceStatus.COMPLETED, InstanceStatus.FAILED) else None,
        )

    def interrupt_instance(self, instance_id: str, *, failure_class: str, error: str) -> bool:
        """Pause a still-running instance whose process is stopping; False if it already ended.

        Conditional, like ``claim_for_replay``: an instance that finished on its
        own in the meantime keeps its real outcome.
        """
        return self._pause_running(instance_id, failure_class, error)

    def heartbeat(self, worker: str, instance_ids: Sequence[str]) -> int:
        """Renew ``worker``'s lease on the instances it is running; how many it still holds."""
        if not instance_ids:
            return 0
        with self._session() as session:
            result = session.execute(
                update(WorkflowInstance)
                .where(
                    col(WorkflowInstance.id).in_(list(instance_ids)),
                    col(WorkflowInstance.status).in_(_HELD),
                    col(WorkflowInstance.worker) == worker,
                )
                .values(heartbeat_at=utcnow())
            )
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]

    def running_instances(self, limit: int = 10_000) -> list[WorkflowInstance]:
        """Instances a worker holds (running, or queued and leased), oldest heartbeat first.

        The candidates for a lost worker; queued instances no flow run has
        taken yet are judged by their flow run instead (``unleased_queued``).
        """
        query = (
            select(WorkflowInstance)
            .where(
                or_(
                    col(WorkflowInstance.status) == InstanceStatus.RUNNING.value,
                    and_(
                        col(WorkflowInstance.status) == InstanceStatus.QUEUED.value,
                        col(WorkflowInstance.worker).is_not(None),
                    ),
                )
            )
            .order_by(col(WorkflowInstance.heartbeat_at))
            .options(*_WITHOUT_PAYLOADS)
            .limit(limit)
        )
        with self._session() as session:
            return list(session.exec(query).all())

    def recover_lost(
        self,
        instance_id: str,
        *,
        worker: str | None,
        heartbeat_at: datetime | None,
        failure_class: str,
        error: str,
    ) -> bool:
        """Pause an instance whose worker died; False if it moved on since it was judged lost.

        Conditional on the worker and heartbeat that were judged dead, so two
        processes recovering at once act once, and a worker that was only slow
        (and renewed its lease meanwhile) keeps its instance.
        """
        return self._pause_running(
            instance_id,
            failure_class,
            error,
            _is(col(WorkflowInstance.worker), worker),
            _not_renewed_since(col(WorkflowInstance.heartbeat_at), heartbeat_at),
        )

    def _pause_running(self, instance_id: str, failure_class: str, error: str, *conditions: Any) -> bool:
        """Move a running or queued instance (meeting ``conditions``) to paused, in one transaction.

        Its unfinished step runs fail, it is marked stopped at the first of
        them, and its requests in flight are closed: their answers never
        arrived here, though the provider may have served (and billed) them.
        """
        now = utcnow()
        with self._session() as session:
            result = session.execute(
                update(WorkflowInstance)
                .where(
                    col(WorkflowInstance.id) == instance_id,
                    col(WorkflowInstance.status).in_(_HELD),
                    *conditions,
                )
                .values(
                    status=InstanceStatus.PAUSED.value,
                    failure_class=failure_class,
                    error=error,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return False
            unfinished = (
                col(StepRun.instance_id) == instance_id,
                col(StepRun.status) == StepRunStatus.RUNNING.value,
            )
            failed_step = session.exec(
                select(StepRun.step).where(*unfinished).order_by(col(StepRun.started_at))
            ).first()
            if failed_step is not None:
                session.execute(
                    update(WorkflowInstance)
                    .where(col(WorkflowInstance.id) == instance_id)
                    .values(failed_step=failed_step)
                )
            session.execute(
                update(StepRun)
                .where(*unfinished)
                .values(status=StepRunStatus.FAILED.value, failure_class=failure_class, finished_at=now)
            )
            session.execute(
                update(Attempt)
                .where(col(Attempt.instance_id) == instance_id, col(Attempt.finished_at).is_(None))
                .values(
                    failure_class=failure_class,
                    error_message="the process stopped before this request's response was recorded; "
                    "the provider may still have served it",
                    finished_at=now,
                )
            )
            session.commit()
            return True

    def seen_digests(self, workflow: str, digests: Sequence[str]) -> set[str]:
        """Which of these input digests already have an instance of ``workflow``."""
        found: set[str] = set()
        with self._session() as session:
            for start in range(0, len(digests), 500):  # stay under bind-parameter limits
                chunk = digests[start : start + 500]
                query = select(WorkflowInstance.source_digest).where(
                    WorkflowInstance.workflow == workflow, col(WorkflowInstance.source_digest).in_(chunk)
                )
                found.update(d for d in session.exec(query).all() if d is not None)
        return found

    def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        with self._session() as session:
            return session.get(WorkflowInstance, instance_id)

    def claim_for_replay(
        self, instance_id: str, *, allow_completed: bool, worker: str | None = None
    ) -> int | None:
        """Atomically move a stopped instance back to running; the new generation, or None.

        A single conditional UPDATE decides, so of two concurrent replays (in
        any number of processes) exactly one gets the instance.
        """
        allowed = {s.value for s in REPLAYABLE}
        if allow_completed:
            allowed.add(InstanceStatus.COMPLETED.value)
        with self._session() as session:
            result = session.execute(
                update(WorkflowInstance)
                .where(col(WorkflowInstance.id) == instance_id, col(WorkflowInstance.status).in_(allowed))
                .values(
                    status=InstanceStatus.RUNNING.value,
                    generation=WorkflowInstance.generation + 1,
                    updated_at=utcnow(),
                    finished_at=None,
                    worker=worker,
                    heartbeat_at=utcnow() if worker else None,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return None
            # A replay decides the step afresh: reviews still open no longer apply.
            session.execute(
                update(ReviewItem)
                .where(
                    col(ReviewItem.instance_id) == instance_id,
                    col(ReviewItem.status) == ReviewStatus.OPEN.value,
                )
                .values(status=ReviewStatus.SUPERSEDED.value, decided_by="replay", decided_at=utcnow())
            )
            session.commit()
            instance = session.get(WorkflowInstance, instance_id)
            assert instance is not None
            session.refresh(instance)
            return instance.generation

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

    def search_instances(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        failure_class: str | None = None,
        step: str | None = None,
        text: str | None = None,
        since: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[WorkflowInstance]:
        """One page of instances, newest first, for browsing; every filter is optional.

        ``text`` matches the start of the id, or anywhere in the workflow, failed
        step, failure class, source or error. Ordered by the indexed (status, created_at) when a
        status is given, so a page stays cheap however many rows there are.
        """
        query = select(WorkflowInstance)
        if status:
            query = query.where(WorkflowInstance.status == status)
        if workflow:
            query = query.where(WorkflowInstance.workflow == workflow)
        if failure_class:
            query = query.where(WorkflowInstance.failure_class == failure_class)
        if step:
            query = query.where(WorkflowInstance.failed_step == step)
        if since is not None:
            query = query.where(col(WorkflowInstance.created_at) >= since)
        if text:
            query = query.where(
                or_(
                    col(WorkflowInstance.id).startswith(text, autoescape=True),
                    *(
                        col(column).contains(text, autoescape=True)
                        for column in (
                            WorkflowInstance.workflow,
                            WorkflowInstance.failed_step,
                            WorkflowInstance.failure_class,
                            WorkflowInstance.source,
                            WorkflowInstance.error,
                        )
                    ),
                )
            )
        query = query.order_by(col(WorkflowInstance.created_at).desc()).offset(offset).limit(limit)
        with self._session() as session:
            return list(session.exec(query).all())

    def find_instance(self, prefix: str) -> list[WorkflowInstance]:
        """Instances whose id starts with ``prefix`` (ids are shown shortened)."""
        query = (
            select(WorkflowInstance)
            .where(col(WorkflowInstance.id).startswith(prefix, autoescape=True))
            .limit(2)
        )
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

    def start_step_run(
        self, instance_id: str, step: str, index: int, input: Any, generation: int = 0
    ) -> StepRun:
        run = StepRun(instance_id=instance_id, step=step, index=index, input=input, generation=generation)
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
        insert: StepRun | None = None,
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
        with self._session() as session:
            if insert is not None:
                for name, value in values.items():
                    setattr(insert, name, value)
                session.add(insert)
                session.flush()
            else:
                _update_row(session, StepRun, step_run_id, values)
            if last_attempt is not None:
                attempt_id, outcome = last_attempt
                _update_row(session, Attempt, attempt_id, outcome)
            session.commit()

    def reusable_outputs(self, instance_id: str) -> dict[tuple[str, int], Any]:
        """The newest completed output of each (step, index): what a replay need not redo."""
        query = (
            select(StepRun)
            .where(StepRun.instance_id == instance_id, StepRun.status == StepRunStatus.COMPLETED.value)
            .order_by(col(StepRun.generation))
        )
        with self._session() as session:
            return {(run.step, run.index): run.output for run in session.exec(query).all()}

    def supersede_from(self, instance_id: str, step: str) -> int:
        """Mark ``step``'s completed runs, and every completed run after it, to be redone."""
        with self._session() as session:
            first = session.exec(
                select(func.min(StepRun.started_at)).where(
                    StepRun.instance_id == instance_id,
                    StepRun.step == step,
                    StepRun.status == StepRunStatus.COMPLETED.value,
                )
            ).one()
            if first is None:
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

    def last_attempt(self, step_run_id: str) -> Attempt | None:
        with self._session() as session:
            return session.exec(
                select(Attempt)
                .where(Attempt.step_run_id == step_run_id)
                .order_by(col(Attempt.attempt_number).desc())
            ).first()

    def last_attempt_of_step(self, instance_id: str, step: str) -> Attempt | None:
        """The newest attempt at ``step`` in an instance (any generation)."""
        with self._session() as session:
            return session.exec(
                select(Attempt)
                .where(Attempt.instance_id == instance_id, Attempt.step == step)
                .order_by(col(Attempt.started_at).desc(), col(Attempt.attempt_number).desc())
            ).first()

    def stopped_at_step(self, step: str, limit: int = 10_000) -> list[WorkflowInstance]:
        """Instances stopped (paused, needs_review, failed) at ``step``, oldest first."""
        query = (
            select(WorkflowInstance)
            .where(
                WorkflowInstance.failed_step == step,
                col(WorkflowInstance.status).in_([s.value for s in REPLAYABLE]),
            )
            .order_by(col(WorkflowInstance.created_at))
            .limit(limit)
        )
        with self._session() as session:
            return list(session.exec(query).all())

    def get_step_run(self, step_run_id: str) -> StepRun | None:
        with self._session() as session:
            return session.get(StepRun, step_run_id)

    # Reviews and notifications -------------------------------------------------------

    def add_review(self, item: ReviewItem) -> ReviewItem:
        with self._session() as session:
            session.add(item)
            session.commit()
        return item

    def get_review(self, review_id: str) -> ReviewItem | None:
        with self._session() as session:
            found = session.get(ReviewItem, review_id)
            if found is None:
                matches = session.exec(
                    select(ReviewItem)
                    .where(col(ReviewItem.id).startswith(review_id, autoescape=True))
                    .limit(2)
                ).all()
                if len(matches) > 1:
                    raise LookupError(f"{review_id!r} matches several reviews; give more of the id")
                found = matches[0] if matches else None
            return found

    def list_reviews(
        self, status: str | None = ReviewStatus.OPEN.value, limit: int = 100, instance_id: str | None = None
    ) -> list[ReviewItem]:
        query = select(ReviewItem).order_by(col(ReviewItem.created_at).desc()).limit(limit)
        if status:
            query = query.where(ReviewItem.status == status)
        if instance_id:
            query = query.where(ReviewItem.instance_id == instance_id)
        with self._session() as session:
            return list(session.exec(query).all())

    def decide_review(
        self, review_id: str, status: ReviewStatus, *, by: str, output: Any = None, note: str | None = None
    ) -> bool:
        """Close an open review of a waiting instance; False if that is no longer the case.

        Exactly one decision wins. In the same transaction an approval
        completes the failed step run with the corrected output (so a replay
        reuses it) and a rejection fails the instance.
        """
        waiting = (
            sa_select(WorkflowInstance.id)  # type: ignore[call-overload]
            .where(
                col(WorkflowInstance.id) == col(ReviewItem.instance_id),
                col(WorkflowInstance.status) == InstanceStatus.NEEDS_REVIEW.value,
            )
            .exists()
        )
        with self._session() as session:
            result = session.execute(
                update(ReviewItem)
                .where(
                    col(ReviewItem.id) == review_id,
                    col(ReviewItem.status) == ReviewStatus.OPEN.value,
                    waiting,  # only while the instance is still waiting for this decision
                )
                .values(status=status.value, output=output, decided_by=by, note=note, decided_at=utcnow())
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return False
            if status is ReviewStatus.APPROVED:
                item = session.get(ReviewItem, review_id)
                assert item is not None
                session.execute(
                    update(StepRun)
                    .where(col(StepRun.id) == item.step_run_id)
                    .values(
                        status=StepRunStatus.COMPLETED.value,
                        output=output,
                        model_id=f"review:{by}"[:100],
                        finished_at=utcnow(),
                    )
                )
            else:
                item = session.get(ReviewItem, review_id)
                assert item is not None
                session.execute(
                    update(WorkflowInstance)
                    .where(col(WorkflowInstance.id) == item.instance_id)
                    .values(
                        status=InstanceStatus.FAILED.value,
                        failed_step=item.step,
                        failure_class=item.failure_class,
                        error=f"rejected in review by {by}" + (f": {note}" if note else ""),
                        updated_at=utcnow(),
                        finished_at=utcnow(),
                    )
                )
            session.commit()
            return True

    def add_notification(self, notification: Notification) -> None:
        with self._session() as session:
            session.add(notification)
            session.commit()

    def notifications(self, instance_id: str | None = None) -> list[Notification]:
        query = select(Notification).order_by(col(Notification.created_at))
        if instance_id:
            query = query.where(Notification.instance_id == instance_id)
        with self._session() as session:
            return list(session.exec(query).all())

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
        with self._session() as session:
            return [
                (w, s, m, int(n), int(i), int(o), float(c))
                for w, s, m, n, i, o, c in session.execute(query).all()
            ]

    def median_latency_by_model(self, recent: int = 5000) -> dict[str, float]:
        """Median latency (ms) of each model's recent successful attempts, for routing."""
        query = (
            select(Attempt.model_id, Attempt.latency_ms)
            .where(col(Attempt.failure_class).is_(None), col(Attempt.latency_ms).is_not(None))
            .order_by(col(Attempt.started_at).desc())
            .limit(recent)
        )
        samples: dict[str, list[float]] = {}
        with self._session() as session:
            for model_id, latency in session.exec(query).all():
                samples.setdefault(model_id, []).append(float(latency or 0.0))
        return {model_id: statistics.median(values) for model_id, values in samples.items()}

    def add_attempt(self, attempt: Attempt) -> str:
        """Insert a whole attempt row at once (imports and seeding; steps use start/finish)."""
        return self.start_attempt(attempt)

    def start_attempt(self, attempt: Attempt, *, step_run: StepRun | None = None) -> str:
        """Record a request about to be sent (``finished_at`` empty: in flight).

        ``step_run`` is its step run when not yet written: the step's first
        request writes both in one commit.
        """
        with self._session() as session:
            if step_run is not None:
                session.add(step_run)
                session.flush()
            session.add(attempt)
            session.commit()
        return attempt.id

    def finish_attempt(self, attempt_id: str, **values: Any) -> None:
        """Complete an in-flight attempt row with what came back."""
        self._update(Attempt, attempt_id, **values)

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

    def set_current_prompt(
        self, step: str, system: str, template: str, content_hash: str, author: str, note: str | None
    ) -> str:
        """Make this text the step's prompt from now on (a new version if the text is new)."""
        version_id = self.prompt_version(step, system, template, content_hash, author)
        with self._session() as session:
            version = session.get(PromptVersion, version_id)
            if version is not None and note and not version.note:
                version.note = note
                session.add(version)
            current = session.get(PromptCurrent, step) or PromptCurrent(
                step=step, prompt_version_id=version_id, set_by=author
            )
            current.prompt_version_id = version_id
            current.set_by = author
            current.set_at = utcnow()
            session.add(current)
            session.commit()
        self._current.pop(step, None)
        return version_id

    def clear_current_prompt(self, step: str) -> bool:
        """Go back to the prompt in code; False if none was chosen."""
        with self._session() as session:
            current = session.get(PromptCurrent, step)
            if current is None:
                return False
            session.delete(current)
            session.commit()
        self._current.pop(step, None)
        return True

    def current_prompt(self, step: str) -> PromptVersion | None:
        """The version an operator chose for ``step``, if any.

        Read at most once a second per step: a choice made here applies at once,
        one made in another process from its next step run a second later.
        """
        now = time.monotonic()
        cached = self._current.get(step)
        if cached is not None and now - cached[0] < self.CURRENT_PROMPT_TTL_S:
            return cached[1]
        with self._session() as session:
            current = session.get(PromptCurrent, step)
            found = session.get(PromptVersion, current.prompt_version_id) if current else None
        self._current[step] = (now, found)
        return found

    def _find_prompt(self, step: str, content_hash: str) -> str | None:
        with self._session() as session:
            return session.exec(
                select(PromptVersion.id).where(
                    PromptVersion.step == step, PromptVersion.content_hash == content_hash
                )
            ).first()

    def _update(
        self, model: type[WorkflowInstance] | type[StepRun] | type[Attempt], row_id: str, **values: Any
    ) -> None:
        """One UPDATE by primary key in its own transaction."""
        with self._session() as session:
            _update_row(session, model, row_id, values)
            session.commit()


def _update_row(
    session: Session,
    model: type[WorkflowInstance] | type[StepRun] | type[Attempt],
    row_id: str,
    values: dict[str, Any],
) -> None:
    """One UPDATE by primary key (no read first: this is on every step's path)."""
    result = session.execute(update(model).where(col(model.id) == row_id).values(**values))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise KeyError(f"no {model.__tablename__} with id {row_id}")


def _unleased() -> tuple[Any, Any]:
    """Queued, and no flow run has taken it yet."""
    return (
        col(WorkflowInstance.status) == InstanceStatus.QUEUED.value,
        col(WorkflowInstance.worker).is_(None),
    )


def _is(column: Any, value: Any) -> Any:
    """``column = value``, or ``IS NULL`` for None (SQL's ``= NULL`` is never true)."""
    return column.is_(None) if value is None else column == value


def _not_renewed_since(column: Any, seen: datetime | None) -> Any:
    """The lease was not renewed after the heartbeat that was judged stale."""
    return column.is_(None) if seen is None else or_(column.is_(None), column <= seen)
