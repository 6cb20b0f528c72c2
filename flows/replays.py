"""Replaying an instance: from its failed step (or a named one), reusing every known output.

    needs_review / paused / failed ──replay──> running   (exactly one replay wins)

A replay reruns the flow; steps whose output is already known return it
without calling a provider, so only the failed step (or the one named with
``--from``) and what follows run again, with the current prompt.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flows.engine import Scope
from flows.recovery import LostInstance, is_lost, recover
from flows.registry import get_workflow
from flows.running import RunResult, check_workflow, instance_by_prefix, parse_input, run_instance
from flows.runtime import Runtime
from steps.errors import FailureClass, InputError, StepLineError
from storage.models import InstanceStatus
from storage.store import Claim, Fence, StorageError

__all__ = ["ReplayRefused", "StepReplay", "replay", "replay_step_failures"]


class ReplayRefused(StepLineError):
    """The instance is running (another replay?) or completed with no step named to redo."""


def replay(
    instance_id: str,
    runtime: Runtime,
    *,
    from_step: str | None = None,
    on_step: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Rerun an instance from its failed step (or ``from_step``), reusing known outputs; once
    ``cancel`` is set, the instance pauses before its next step (and can be replayed again)."""
    instance = instance_by_prefix(runtime, instance_id)
    workflow = get_workflow(instance.workflow)
    if from_step is not None:
        names = [step.name for step in workflow.steps]
        if from_step not in names:
            close = difflib.get_close_matches(from_step, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"{workflow.name} has no step {from_step!r}; {hint}its steps: {', '.join(names)}"
            )
    check_workflow(workflow, runtime)
    inputs = parse_input(workflow, instance.input, f"the stored input of instance {instance.id}")
    claim = _claim(runtime, instance.id, allow_completed=from_step is not None)
    try:
        if from_step is not None:
            runtime.store.supersede_from(claim.fence, from_step)
        reusable = runtime.store.reusable_outputs(instance.id)
    except StorageError as exc:  # claimed: never leave it looking "running"
        _pause_unstarted(runtime, claim.fence, workflow.steps[0].name, exc)
        raise
    scope = Scope(
        runtime,
        claim.fence,
        generation=claim.generation,
        reusable=reusable,
        on_step=on_step,
        cancel=cancel,
    )
    return run_instance(workflow, inputs, runtime, scope, instance.owner)


def _pause_unstarted(runtime: Runtime, fence: Fence, step: str, exc: StorageError) -> None:
    """Pause a claimed replay that could not start because the database failed (best effort:
    if this fails too, the lease lapses and recovery pauses it)."""
    with contextlib.suppress(StorageError):
        runtime.store.finish_instance(
            fence,
            InstanceStatus.PAUSED,
            failed_step=step,
            failure_class=FailureClass.STORAGE.value,
            error=f"the replay could not start: {exc}",
        )


def _claim(runtime: Runtime, instance_id: str, *, allow_completed: bool) -> Claim:
    """The instance, moved back to running for this process: its new generation and token.

    A running instance whose worker is judged dead (see ``flows.recovery``)
    is recovered first, so a replay is all it takes after a crash.
    """
    store = runtime.store
    claim = store.claim_for_replay(instance_id, allow_completed=allow_completed, worker=runtime.worker)
    if claim is not None:
        return claim
    current = store.get_instance(instance_id)
    if current is not None and current.held:
        reason = is_lost(current, runtime.settings.workers.lease_s)
        if reason is None:
            doing = "being run right now" if current.status == InstanceStatus.RUNNING.value else "queued"
            raise ReplayRefused(
                f"instance {instance_id} is {doing} by {current.worker or 'another process'} "
                f"(it renews its lease every {runtime.settings.workers.heartbeat_s:g} s); if that "
                f"process is gone, replay again after {runtime.settings.workers.lease_s:g} s"
            )
        recover(store, runtime.settings, LostInstance(current, reason))
        claim = store.claim_for_replay(instance_id, allow_completed=allow_completed, worker=runtime.worker)
        if claim is not None:
            return claim
        current = store.get_instance(instance_id)
    status = current.status if current else "gone"
    hints = {
        "running": "it is being run right now",
        "queued": "it waits for a worker of its work pool; `stepline recover` hands it back "
        "if its flow run is gone",
    }
    hint = hints.get(status, "name a step with --from to redo it")
    raise ReplayRefused(f"instance {instance_id} is {status}; {hint}")


@dataclass(frozen=True)
class StepReplay:
    """One instance replayed from a step: its outcome, and that step's raw output before and after."""

    instance_id: str
    before: str
    after: str
    old_raw: str | None
    new_raw: str | None
    message: str | None = None


def replay_step_failures(
    step: str,
    runtime: Runtime,
    *,
    on_result: Callable[[StepReplay], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[StepReplay]:
    """Replay every instance stopped at ``step`` (say, after its prompt was edited), one by one;
    once ``cancel`` is set no further one starts, and those not reached stay as they were."""
    results = []
    for instance in runtime.store.stopped_at_step(step):
        if cancel is not None and cancel.is_set():
            break
        old = runtime.store.last_attempt_of_step(instance.id, step)
        try:
            outcome = replay(instance.id, runtime)
            after, message = outcome.status.value, outcome.error
        except StepLineError as exc:  # e.g. replayed by someone else meanwhile
            after, message = "refused", exc.message
        new = runtime.store.last_attempt_of_step(instance.id, step)
        result = StepReplay(
            instance.id,
            instance.status,
            after,
            old.raw_output if old else None,
            new.raw_output if new and (old is None or new.id != old.id) else None,
            message,
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
