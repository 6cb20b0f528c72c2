"""Review decisions: a person approves a corrected output (the instance resumes) or rejects it.

needs_review ──approve──> (step completed with the correction) ──replay──> running
needs_review ──reject───> failed
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from flows.inputs import id_problem
from flows.registry import get_workflow
from flows.replays import replay
from flows.running import RunResult, instance_by_prefix
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.definition import Step
from steps.errors import DefinitionError, StepLineError, describe_validation_error
from storage.models import ReviewItem, ReviewStatus

__all__ = ["ReviewError", "approve_review", "reject_review"]


class ReviewError(StepLineError):
    """A review cannot be decided: unknown, already decided, or the correction is invalid."""


def approve_review(
    review_id: str,
    output: Any,
    runtime: Runtime,
    *,
    by: str,
    note: str | None = None,
    on_step: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Accept a corrected output (validated like the model's) and resume the instance after it;
    ``on_step`` hears each step as it starts, and once ``cancel`` is set the instance pauses
    before its next step (the approval stands; a replay goes on from there)."""
    item = _open_review(runtime, review_id)
    instance = instance_by_prefix(runtime, item.instance_id)
    step = _step_of(get_workflow(instance.workflow), item.step)
    try:
        corrected = step.output_model.model_validate(output)
    except ValidationError as exc:
        raise ReviewError(
            f"the correction does not match {step.output_model.__name__} for step {step.name!r}: "
            f"{describe_validation_error(exc)}; nothing was changed"
        ) from None
    dumped = corrected.model_dump(mode="json")
    if not runtime.store.decide_review(item.id, ReviewStatus.APPROVED, by=by, output=dumped, note=note):
        raise ReviewError(_decided_elsewhere(runtime, item))
    return replay(instance.id, runtime, on_step=on_step, cancel=cancel)


def reject_review(review_id: str, runtime: Runtime, *, by: str, note: str | None = None) -> None:
    """Refuse the output; the instance fails for good (it can still be replayed)."""
    item = _open_review(runtime, review_id)
    if not runtime.store.decide_review(item.id, ReviewStatus.REJECTED, by=by, note=note):
        raise ReviewError(_decided_elsewhere(runtime, item))


def _decided_elsewhere(runtime: Runtime, item: ReviewItem) -> str:
    current = runtime.store.get_review(item.id)
    instance = runtime.store.get_instance(item.instance_id)
    state = current.status if current else "gone"
    return (
        f"review {item.id} is now {state} and its instance {instance.status if instance else 'gone'} "
        "(decided or replayed by someone else just now); nothing was changed"
    )


def _open_review(runtime: Runtime, review_id: str) -> ReviewItem:
    problem = id_problem("review", review_id, "stepline review list")
    if problem is not None:
        raise ReviewError(problem)
    try:
        item = runtime.store.get_review(review_id)
    except LookupError as exc:
        raise ReviewError(str(exc)) from None
    if item is None:
        raise ReviewError(f"no review with id {review_id!r}; list them with `stepline review list`")
    if item.status != ReviewStatus.OPEN.value:
        raise ReviewError(f"review {item.id} is already {item.status} by {item.decided_by}")
    return item


def _step_of(workflow: Workflow, name: str) -> Step[Any, Any]:
    for step in workflow.steps:
        if step.name == name:
            return step
    raise DefinitionError(f"workflow {workflow.name!r} no longer has a step {name!r}")
