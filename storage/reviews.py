"""Review items (outputs a person must correct or reject) and notifications to owners."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session, col, select

from storage.base import StoreBase, insert_rows
from storage.fencing import Fence, guard, handed_on
from storage.models import (
    InstanceStatus,
    Notification,
    ReviewItem,
    ReviewStatus,
    StepRun,
    StepRunStatus,
    WorkflowInstance,
    utcnow,
)

__all__ = ["ReviewStore"]


class ReviewStore(StoreBase):
    """Reviews and notifications. A stopped run adds its review with its outcome
    (``InstanceStore.finish_instance``), in one transaction."""

    def get_review(self, review_id: str) -> ReviewItem | None:
        """The review with this id, or the one id prefix matches; ``LookupError`` if several do."""

        def work(session: Session) -> ReviewItem | None:
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

        return self._run("reading a review", work)

    def list_reviews(
        self, status: str | None = ReviewStatus.OPEN.value, limit: int = 100, instance_id: str | None = None
    ) -> list[ReviewItem]:
        query = select(ReviewItem).order_by(col(ReviewItem.created_at).desc()).limit(limit)
        if status:
            query = query.where(ReviewItem.status == status)
        if instance_id:
            query = query.where(ReviewItem.instance_id == instance_id)
        return self._run("listing reviews", lambda session: list(session.exec(query).all()))

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

        def work(session: Session) -> bool:
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
            item = session.get(ReviewItem, review_id)
            assert item is not None
            if status is ReviewStatus.APPROVED:
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
                        **handed_on(),
                    )
                )
            session.commit()
            return True

        def landed(session: Session) -> bool | None:
            item = session.get(ReviewItem, review_id)
            return (
                True if item is not None and item.status == status.value and item.decided_by == by else None
            )

        return self._run("recording a review decision", work, landed=landed)

    def add_notification(self, notification: Notification, fence: Fence | None = None) -> None:
        """Record a message to an owner; fenced when the worker running the instance sends it."""

        def work(session: Session) -> bool:
            if fence is not None:
                guard(session, fence)
            insert_rows(session, notification)
            session.commit()
            return True

        def landed(session: Session) -> bool | None:
            return True if session.get(Notification, notification.id) is not None else None

        self._run("recording a notification", work, landed=landed)

    def notifications(self, instance_id: str | None = None) -> list[Notification]:
        query = select(Notification).order_by(col(Notification.created_at))
        if instance_id:
            query = query.where(Notification.instance_id == instance_id)
        return self._run("reading notifications", lambda session: list(session.exec(query).all()))
