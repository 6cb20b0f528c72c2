"""Workflow instances: creating and queueing them, who holds them (leases), how each ends.

Every change of hands adds 1 to the instance's fencing token
(``storage.fencing``): a lease taken, a lost worker's instance recovered, a
run stopped, a replay claimed, a review rejected. Writes a worker makes name
the token it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, or_, tuple_, update
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from storage.base import StoreBase, insert_rows
from storage.errors import LeaseLost
from storage.fencing import Fence, current, guard, handed_on
from storage.models import (
    REPLAYABLE,
    Attempt,
    InstanceStatus,
    ReviewItem,
    ReviewStatus,
    StepRun,
    StepRunStatus,
    WorkflowInstance,
    utcnow,
)

__all__ = ["Claim", "InstanceDetail", "InstanceStore", "close_unfinished"]

_HELD = (InstanceStatus.RUNNING.value, InstanceStatus.QUEUED.value)
"""Statuses in which a worker holds an instance under a lease."""

_WITHOUT_PAYLOADS = (defer(WorkflowInstance.input), defer(WorkflowInstance.output))
"""For the recovery scans every flow run makes as it starts: they judge leases and flow runs,
and a backlog's inputs (up to 1 MB each) need not come along."""

_UNRECORDED = (
    "the process stopped before this request's response was recorded; the provider may still have served it"
)


@dataclass(frozen=True)
class InstanceDetail:
    instance: WorkflowInstance
    step_runs: list[StepRun]
    attempts: list[Attempt]


class Claim(NamedTuple):
    """A replay's hold on an instance: its new generation and the token for its writes."""

    generation: int
    fence: Fence


def close_unfinished(
    session: Session, instance_ids: Any, failure_class: str, message: str = _UNRECORDED
) -> str | None:
    """Fail the unfinished step runs and close the requests in flight of these instances.

    Their answers never arrived here (or could not be recorded), though the
    provider may have served and billed them. The step first left unfinished,
    if any, is returned: where the instance stopped.
    """
    now = utcnow()
    unfinished = (
        col(StepRun.instance_id).in_(instance_ids),
        col(StepRun.status) == StepRunStatus.RUNNING.value,
    )
    first = session.exec(select(StepRun.step).where(*unfinished).order_by(col(StepRun.started_at))).first()
    session.execute(
        update(StepRun)
        .where(*unfinished)
        .values(status=StepRunStatus.FAILED.value, failure_class=failure_class, finished_at=now)
    )
    session.execute(
        update(Attempt)
        .where(col(Attempt.instance_id).in_(instance_ids), col(Attempt.finished_at).is_(None))
        .values(failure_class=failure_class, error_message=message, finished_at=now)
    )
    return first


class InstanceStore(StoreBase):
    """Instances and their leases."""

    # Starting -----------------------------------------------------------------------

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
        """A new running instance, held by ``worker``; its token is ``instance.fence``."""
        instance = WorkflowInstance(
            workflow=workflow,
            input=input,
            owner=owner,
            source=source,
            source_digest=source_digest,
            worker=worker,
            heartbeat_at=utcnow() if worker else None,
        )

        def work(session: Session) -> WorkflowInstance:
            insert_rows(session, instance)
            session.commit()
            return instance

        return self._run("creating an instance", work, landed=lambda s: s.get(WorkflowInstance, instance.id))

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

        def work(session: Session) -> list[WorkflowInstance]:
            insert_rows(session, *instances)
            session.commit()
            return instances

        def landed(session: Session) -> list[WorkflowInstance] | None:
            first = session.get(WorkflowInstance, instances[0].id) if instances else None
            return instances if first is not None else None

        return self._run("queueing instances", work, landed=landed)

    def set_flow_run(self, fence: Fence, flow_run_id: str) -> None:
        """Record the Prefect flow run of the worker holding ``fence``."""

        def work(session: Session) -> None:
            result = session.execute(
                update(WorkflowInstance).where(current(fence)).values(flow_run_id=flow_run_id)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(fence.instance_id, fence.token)
            session.commit()

        self._run("recording the flow run", work)

    def set_queued_flow_run(self, instance_ids: Sequence[str], flow_run_id: str) -> None:
        """Record which flow run was asked to run these queued instances."""

        def work(session: Session) -> None:
            session.execute(
                update(WorkflowInstance)
                .where(col(WorkflowInstance.id).in_(list(instance_ids)), *_unleased())
                .values(flow_run_id=flow_run_id)
            )
            session.commit()

        self._run("recording the flow run", work)

    def lease_queued(self, instance_ids: Sequence[str], worker: str) -> dict[str, int]:
        """Take a lease on those of these queued instances no one holds: their tokens, by id.

        A flow run leases all of its instances when it starts, so that if its
        worker dies, the ones it had not started yet are recovered like the
        ones it was running.
        """
        ids = list(instance_ids)
        if not ids:
            return {}

        def work(session: Session) -> dict[str, int]:
            rows = session.execute(
                update(WorkflowInstance)
                .where(col(WorkflowInstance.id).in_(ids), *_unleased())
                .values(worker=worker, heartbeat_at=utcnow(), **handed_on())
                .returning(col(WorkflowInstance.id), col(WorkflowInstance.fence))
            ).all()
            session.commit()
            return {instance_id: token for instance_id, token in rows}

        def landed(session: Session) -> dict[str, int] | None:
            rows = session.exec(
                select(WorkflowInstance.id, WorkflowInstance.fence).where(
                    col(WorkflowInstance.id).in_(ids),
                    col(WorkflowInstance.status) == InstanceStatus.QUEUED.value,
                    col(WorkflowInstance.worker) == worker,
                )
            ).all()
            return {instance_id: token for instance_id, token in rows} or None

        held = self._run("leasing queued instances", work, landed=landed)
        return {i: held[i] for i in ids if i in held}

    def start_queued(self, fence: Fence, worker: str) -> bool:
        """Move a queued instance this worker leased to running; False if it was taken back."""

        def work(session: Session) -> bool:
            result = session.execute(
                update(WorkflowInstance)
                .where(
                    current(fence),
                    col(WorkflowInstance.status) == InstanceStatus.QUEUED.value,
                    col(WorkflowInstance.worker) == worker,
                )
                .values(status=InstanceStatus.RUNNING.value, heartbeat_at=utcnow(), updated_at=utcnow())
            )
            session.commit()
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

        def landed(session: Session) -> bool | None:
            found = session.get(WorkflowInstance, fence.instance_id)
            ok = found and found.fence == fence.token and found.status == InstanceStatus.RUNNING.value
            return True if ok else None

        return self._run("starting a queued instance", work, landed=landed)

    def claim_for_replay(
        self, instance_id: str, *, allow_completed: bool, worker: str | None = None
    ) -> Claim | None:
        """Atomically move a stopped instance back to running for ``worker``; None if not stopped.

        A single conditional UPDATE decides, so of two concurrent replays (in
        any number of processes) exactly one gets the instance.
        """
        allowed = {s.value for s in REPLAYABLE}
        if allow_completed:
            allowed.add(InstanceStatus.COMPLETED.value)

        def work(session: Session) -> Claim | None:
            row = session.execute(
                update(WorkflowInstance)
                .where(col(WorkflowInstance.id) == instance_id, col(WorkflowInstance.status).in_(allowed))
                .values(
                    status=InstanceStatus.RUNNING.value,
                    generation=WorkflowInstance.generation + 1,
                    updated_at=utcnow(),
                    finished_at=None,
                    worker=worker,
                    heartbeat_at=utcnow() if worker else None,
                    **handed_on(),
                )
                .returning(col(WorkflowInstance.generation), col(WorkflowInstance.fence))
            ).first()
            if row is None:
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
            return Claim(row[0], Fence(instance_id, row[1]))

        return self._run("claiming an instance for replay", work)

    # Ending --------------------------------------------------------------------------

    def finish_instance(
        self,
        fence: Fence,
        status: InstanceStatus,
        *,
        output: Any = None,
        failed_step: str | None = None,
        failure_class: str | None = None,
        error: str | None = None,
        review: ReviewItem | None = None,
    ) -> None:
        """Record how the run holding ``fence`` ended; ``LeaseLost`` if the instance moved on.

        The outcome is written by the fenced UPDATE itself. A stop also closes
        what the run left unfinished (a step run or request whose end could not
        be recorded) and adds its review item, in the same transaction.
        """
        now = utcnow()
        values: dict[str, Any] = {
            "status": status.value,
            "output": output,
            "failed_step": failed_step,
            "failure_class": failure_class,
            "error": error,
            "updated_at": now,
            "finished_at": now if status in (InstanceStatus.COMPLETED, InstanceStatus.FAILED) else None,
        }

        def work(session: Session) -> None:
            result = session.execute(update(WorkflowInstance).where(current(fence)).values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(fence.instance_id, fence.token)
            if status is not InstanceStatus.COMPLETED:
                close_unfinished(
                    session,
                    [fence.instance_id],
                    failure_class or "unknown",
                    "its end could not be recorded before the instance stopped; "
                    "the provider may have served it",
                )
            if review is not None and session.get(ReviewItem, review.id) is None:
                insert_rows(session, review)
            session.commit()

        self._run("recording how an instance ended", work)

    def interrupt_instance(self, instance_id: str, *, worker: str, failure_class: str, error: str) -> bool:
        """Pause an instance this process holds because it is stopping; False if it already ended.

        Conditional, like ``claim_for_replay``: an instance that finished on its
        own in the meantime keeps its real outcome.
        """
        return self._pause_held(instance_id, failure_class, error, col(WorkflowInstance.worker) == worker)

    def recover_lost(
        self,
        instance_id: str,
        *,
        fence: int,
        heartbeat_at: datetime | None,
        failure_class: str,
        error: str,
    ) -> bool:
        """Pause an instance whose worker died; False if it moved on since it was judged lost.

        Conditional on the token and heartbeat that were judged dead, so two
        processes recovering at once act once, and a worker that was only slow
        (and renewed its lease meanwhile) keeps its instance.
        """
        return self._pause_held(
            instance_id,
            failure_class,
            error,
            col(WorkflowInstance.fence) == fence,
            _not_renewed_since(col(WorkflowInstance.heartbeat_at), heartbeat_at),
        )

    def _pause_held(self, instance_id: str, failure_class: str, error: str, *conditions: Any) -> bool:
        """Move a running or leased instance (meeting ``conditions``) to paused and retire its token.

        In the same transaction its unfinished step runs fail, it is marked
        stopped at the first of them, and its requests in flight are closed.
        """

        def work(session: Session) -> bool:
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
                    updated_at=utcnow(),
                    **handed_on(),
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return False
            failed_step = close_unfinished(session, [instance_id], failure_class)
            if failed_step is not None:
                session.execute(
                    update(WorkflowInstance)
                    .where(col(WorkflowInstance.id) == instance_id)
                    .values(failed_step=failed_step)
                )
            session.commit()
            return True

        return self._run("pausing an instance", work)

    def close_abandoned(self, failure_class: str) -> int:
        """Close step runs and requests left open on instances no worker holds any more.

        A worker whose database connection failed as it ended the instance may
        leave them; `stepline recover` sweeps them. How many rows were closed.
        """

        def work(session: Session) -> int:
            held = select(WorkflowInstance.id).where(col(WorkflowInstance.status).in_(_HELD))
            open_runs = select(StepRun.instance_id).where(
                col(StepRun.status) == StepRunStatus.RUNNING.value, col(StepRun.instance_id).not_in(held)
            )
            open_attempts = select(Attempt.instance_id).where(
                col(Attempt.finished_at).is_(None), col(Attempt.instance_id).not_in(held)
            )
            ids = set(session.exec(open_runs).all()) | set(session.exec(open_attempts).all())
            if not ids:
                return 0
            close_unfinished(
                session,
                sorted(ids),
                failure_class,
                "left unfinished when its worker stopped without recording its end; "
                "the provider may have served it",
            )
            session.commit()
            return len(ids)

        return self._run("closing abandoned step runs", work)

    def heartbeat(self, worker: str, leases: Mapping[str, int]) -> set[str]:
        """Renew ``worker``'s leases (instance id -> token); the ids it still holds.

        An id missing from the answer was handed on: the worker must stop work on it.
        """
        if not leases:
            return set()
        pairs = list(leases.items())

        def work(session: Session) -> set[str]:
            rows = session.execute(
                update(WorkflowInstance)
                .where(tuple_(col(WorkflowInstance.id), col(WorkflowInstance.fence)).in_(pairs))
                .values(heartbeat_at=utcnow())
                .returning(col(WorkflowInstance.id))
            ).all()
            session.commit()
            return {row[0] for row in rows}

        return self._run("renewing leases", work)

    # Reading ---------------------------------------------------------------------------

    def unleased_queued(self, limit: int = 10_000) -> list[WorkflowInstance]:
        """Queued instances no flow run has taken yet, oldest first."""
        query = (
            select(WorkflowInstance)
            .where(*_unleased())
            .options(*_WITHOUT_PAYLOADS)
            .order_by(col(WorkflowInstance.created_at))
            .limit(limit)
        )
        return self._run("reading queued instances", lambda session: list(session.exec(query).all()))

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
        return self._run("reading running instances", lambda session: list(session.exec(query).all()))

    def seen_digests(self, workflow: str, digests: Sequence[str]) -> set[str]:
        """Which of these input digests already have an instance of ``workflow``."""

        def work(session: Session) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(digests), 500):  # stay under bind-parameter limits
                chunk = digests[start : start + 500]
                query = select(WorkflowInstance.source_digest).where(
                    WorkflowInstance.workflow == workflow, col(WorkflowInstance.source_digest).in_(chunk)
                )
                found.update(d for d in session.exec(query).all() if d is not None)
            return found

        return self._run("reading input digests", work)

    def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        return self._run("reading an instance", lambda session: session.get(WorkflowInstance, instance_id))

    def list_instances(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[WorkflowInstance]:
        return self.search_instances(status=status, workflow=workflow, limit=limit)

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
        return self._run("searching instances", lambda session: list(session.exec(query).all()))

    def find_instance(self, prefix: str) -> list[WorkflowInstance]:
        """Instances whose id starts with ``prefix`` (ids are shown shortened)."""
        query = (
            select(WorkflowInstance)
            .where(col(WorkflowInstance.id).startswith(prefix, autoescape=True))
            .limit(2)
        )
        return self._run("finding an instance", lambda session: list(session.exec(query).all()))

    def instance_detail(self, instance_id: str) -> InstanceDetail | None:
        def work(session: Session) -> InstanceDetail | None:
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

        return self._run("reading an instance", work)

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
        return self._run("reading stopped instances", lambda session: list(session.exec(query).all()))

    def check_lease(self, fence: Fence) -> None:
        """Check (and renew) a token on its own: ``LeaseLost`` once the instance moved on."""

        def work(session: Session) -> None:
            guard(session, fence)
            session.commit()

        self._run("checking a lease", work)


def _unleased() -> tuple[Any, Any]:
    """Queued, and no flow run has taken it yet."""
    return (
        col(WorkflowInstance.status) == InstanceStatus.QUEUED.value,
        col(WorkflowInstance.worker).is_(None),
    )


def _not_renewed_since(column: Any, seen: datetime | None) -> Any:
    """The lease was not renewed after the heartbeat that was judged stale."""
    return column.is_(None) if seen is None else or_(column.is_(None), column <= seen)
