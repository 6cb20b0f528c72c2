"""Running an instance and stopping it: completed, or parked for review or a replay.

    running ──> completed
       ├──> needs_review   a step's output failed validation (or was refused or cut
       │                   off) after its re-asks: a ReviewItem holds the raw output,
       │                   the schema and the errors
       ├──> paused         retries and fallbacks ran out (or credentials failed, or
       │                   what runs it failed): the owner is notified; or the operator
       │                   stopped the run (``interrupted``)
       └──> failed         the workflow itself crashed

Every write a run makes for its instance names the fencing token it holds
(``storage.fencing``); a run that lost its instance stops and writes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prefect import Flow, flow
from prefect.states import Failed
from pydantic import BaseModel, ValidationError

from flows import orchestrator
from flows.engine import SCOPE, Scope
from flows.inputs import check_payload, id_problem
from flows.notify import notify_owner
from flows.registry import get_workflow
from flows.results import discard_failure_result
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.errors import (
    DefinitionError,
    FailureClass,
    InputError,
    StepFailed,
    StepLineError,
    Superseded,
    describe_validation_error,
)
from steps.pii import PiiGuard
from steps.privacy import Origin, WorkflowPrivacy, clear_leaves
from steps.routing import choose_route
from storage.models import InstanceStatus, ReviewItem, WorkflowInstance
from storage.store import Fence, LeaseLost, StorageError

__all__ = [
    "RunResult",
    "check_workflow",
    "interrupt",
    "orchestrator_down",
    "parse_input",
    "run_queued",
    "run_workflow",
]

_log = logging.getLogger("stepline")


@dataclass(frozen=True)
class RunResult:
    instance_id: str
    status: InstanceStatus
    output: BaseModel | None = None
    failed_step: str | None = None
    failure_class: str | None = None
    error: str | None = None
    review_id: str | None = None
    superseded: bool = False
    """This process lost the instance mid-run (judged dead, handed on) and stopped writing;
    ``status`` is what the instance's current holder made of it, as read afterwards."""


def parse_input(workflow: Workflow, payload: Mapping[str, Any] | BaseModel, where: str) -> BaseModel:
    """The payload as the workflow's input model, or an ``InputError`` naming each bad field."""
    check_payload(payload, where)  # what no store can hold (NUL, depth, huge numbers), from any caller
    if isinstance(payload, workflow.input_model):
        return payload
    try:
        return workflow.input_model.model_validate(payload)
    except ValidationError as exc:
        fields = ", ".join(workflow.input_model.model_fields)
        raise InputError(
            f"{where} does not match {workflow.name}'s input ({workflow.input_model.__name__}: "
            f"{fields}): {describe_validation_error(exc)}"
        ) from None


def check_workflow(workflow: Workflow, runtime: Runtime) -> None:
    """Fail before anything is written if a step's models break the catalog or privacy rules."""
    for step in workflow.steps:
        choose_route(step, runtime.settings, privacy=workflow.privacy.of(step))  # includes check_step


def run_workflow(
    workflow: Workflow,
    payload: Mapping[str, Any] | BaseModel,
    runtime: Runtime,
    *,
    owner: str | None = None,
    where: str = "input",
    on_step: Callable[[str], None] | None = None,
    source: str | None = None,
    source_digest: str | None = None,
    cancel: threading.Event | None = None,
    on_created: Callable[[str], None] | None = None,
    inline: bool = False,
) -> RunResult:
    """Start one instance of ``workflow`` and run it until it completes or stops.

    ``source`` and ``source_digest`` record which batch item the input came
    from; setting ``cancel`` pauses the instance before its next step;
    ``on_created`` hears the new instance's id before its first step;
    ``inline`` runs it inside the caller's flow run (see ``Scope.inline``).
    """
    inputs = parse_input(workflow, payload, where)
    check_workflow(workflow, runtime)
    instance = runtime.store.create_instance(
        workflow.name,
        inputs.model_dump(mode="json"),
        owner or runtime.settings.owner,
        source=source,
        source_digest=source_digest,
        worker=runtime.worker,
    )
    if on_created is not None:
        on_created(instance.id)
    scope = Scope(runtime, Fence(instance.id, instance.fence), on_step=on_step, cancel=cancel, inline=inline)
    return run_instance(workflow, inputs, runtime, scope, instance.owner)


def run_queued(
    fence: Fence,
    runtime: Runtime,
    *,
    on_step: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> RunResult | None:
    """Start a queued instance this process has leased (``Store.lease_queued``) and run it.

    None if the lease was lost meanwhile (recovered as lost, or cancelled):
    someone else owns the instance now. An instance that cannot start here
    (its workflow unknown to this worker, its stored input no longer valid)
    fails with the reason rather than waiting forever.
    """
    instance_id = fence.instance_id
    if not runtime.store.start_queued(fence, runtime.worker):
        return None
    instance = runtime.store.get_instance(instance_id)
    assert instance is not None  # just claimed
    try:
        workflow = get_workflow(instance.workflow)
        check_workflow(workflow, runtime)
        inputs = parse_input(workflow, instance.input, f"the stored input of instance {instance.id}")
    except StepLineError as exc:
        try:
            runtime.store.finish_instance(
                fence,
                InstanceStatus.FAILED,
                failure_class=FailureClass.UNKNOWN.value,
                error=f"could not start on {runtime.worker}: {exc.message}",
            )
        except LeaseLost:
            return None
        return RunResult(instance_id, InstanceStatus.FAILED, error=exc.message)
    scope = Scope(runtime, fence, on_step=on_step, cancel=cancel)
    return run_instance(workflow, inputs, runtime, scope, instance.owner)


def instance_by_prefix(runtime: Runtime, instance_id: str) -> WorkflowInstance:
    """The one instance whose id starts with ``instance_id`` (ids are shown shortened)."""
    problem = id_problem("instance", instance_id, "stepline instances")
    if problem is not None:  # never send a 100,000-character or non-hex "id" to the database
        raise InputError(problem)
    found = runtime.store.find_instance(instance_id)
    if not found:
        raise InputError(f"no instance with id {instance_id!r}; list them with `stepline instances`")
    if len(found) > 1:
        raise InputError(f"{instance_id!r} matches several instances; give more of the id")
    return found[0]


def run_instance(
    workflow: Workflow, inputs: BaseModel, runtime: Runtime, scope: Scope, owner: str
) -> RunResult:
    """Run an instance this process holds (``scope.fence``) until it completes or stops."""
    scope.privacy = workflow.privacy
    if workflow.privacy.holds_personal_data:
        inputs = _hand_over(inputs, workflow.privacy, scope)
        scope.declassifiers = frozenset(d.name for d in workflow.declassifiers)
    first = workflow.steps[0]
    runtime.executor.prepare(first, workflow.privacy.of(first))  # built while Prefect creates the flow run
    runtime.apply_prefect_settings()
    runtime.heartbeat.hold(scope.instance_id, scope.fence.token)
    try:
        return _run_held(workflow, inputs, runtime, scope, owner)
    except (Superseded, LeaseLost) as exc:
        return _superseded(runtime, scope, exc)
    finally:
        runtime.heartbeat.release(scope.instance_id)


def _hand_over(inputs: BaseModel, privacy: WorkflowPrivacy, scope: Scope) -> BaseModel:
    """The input as the flow gets it: its personal fields learned by the instance's guard, the
    others' text ``Declassified`` (an input field not marked Personal holds no personal data)."""
    scope.guard = PiiGuard()
    update = {}
    for name in type(inputs).model_fields:
        value = getattr(inputs, name)
        if name in privacy.personal_inputs:
            scope.guard.learn(value, f"input.{name}")
        else:
            update[name] = clear_leaves(value, Origin("input", name))
    return inputs.model_copy(update=update)


def _run_held(workflow: Workflow, inputs: BaseModel, runtime: Runtime, scope: Scope, owner: str) -> RunResult:
    token = SCOPE.set(scope)
    try:
        if scope.inline:
            output = workflow.flow.fn(inputs)
        else:
            given = _INPUTS.set(inputs)
            try:
                output = orchestrator.call(_instance_flow(workflow), scope.finished)
            except Exception as prefect_failed:
                if not scope.finished.is_set():
                    raise  # not the workflow's: Prefect itself failed (creating the flow run, say)
                if isinstance(prefect_failed, orchestrator.Abandoned) or orchestrator_down(prefect_failed):
                    orchestrator.LOST.set()  # the work is done; only Prefect's record of it failed
            finally:
                _INPUTS.reset(given)
            if scope.ended is not None:
                raise scope.ended
            if scope.result is not None:  # done, whatever Prefect made of the flow run's end
                output = scope.result
        if not isinstance(output, workflow.output_model):
            raise DefinitionError(
                f"workflow {workflow.name!r} returned {type(output).__name__}, "
                f"not its output model {workflow.output_model.__name__}"
            )
    except (Superseded, LeaseLost):
        raise
    except StepFailed as shown:  # the original, not what Prefect was shown
        exc = scope.unmask(shown)
        return _stopped(workflow, runtime, scope, owner, exc if isinstance(exc, StepFailed) else shown)
    except KeyboardInterrupt:
        if scope.finished.is_set() and scope.ended is None and scope.result is not None:
            # Stopped while Prefect recorded the end: the work is done, and so is the instance.
            runtime.store.finish_instance(
                scope.fence, InstanceStatus.COMPLETED, output=scope.result.model_dump(mode="json")
            )
        else:
            interrupt(runtime, scope.instance_id)
        raise
    except BaseException as shown:
        exc = scope.unmask(shown)
        stopping = scope.cancel is not None and scope.cancel.is_set()
        if stopping and isinstance(exc, Exception):
            # Stopping tears down what the flow leans on (a terminal's Ctrl-C also stops
            # Prefect's temporary server): a crash now is the stop's doing, and resumable.
            interrupt(runtime, scope.instance_id)
            return _interrupted(scope, exc)
        step = scope.current_step or workflow.steps[0].name
        if isinstance(exc, StorageError):  # the database failed outside a step's own writes
            stopped = StepFailed(
                f"the database failed at step {step!r}: {exc}"[:1000], step=step, failure=FailureClass.STORAGE
            )
            return _stopped(workflow, runtime, scope, owner, stopped)
        if orchestrator_down(exc):
            orchestrator.LOST.set()
            stopped = StepFailed(
                f"Prefect's API failed at step {step!r}: {type(exc).__name__}: {exc}"[:1000],
                step=step,
                failure=FailureClass.ORCHESTRATOR,
            )
            return _stopped(workflow, runtime, scope, owner, stopped)
        runtime.store.finish_instance(
            scope.fence,
            InstanceStatus.FAILED,
            failed_step=scope.current_step,
            failure_class=FailureClass.UNKNOWN.value,
            error=f"{type(exc).__name__}: {exc}",
        )
        if exc is shown:
            raise
        raise exc from None
    finally:
        SCOPE.reset(token)
    runtime.store.finish_instance(
        scope.fence, InstanceStatus.COMPLETED, output=output.model_dump(mode="json")
    )
    return RunResult(scope.instance_id, InstanceStatus.COMPLETED, output)


_INPUTS: ContextVar[BaseModel | None] = ContextVar("stepline_instance_input", default=None)
_INSTANCE_FLOWS: dict[int, Flow[[], Any]] = {}
_INSTANCE_FLOWS_LOCK = threading.Lock()


def _instance_flow(workflow: Workflow) -> Flow[[], Any]:
    """The flow an instance runs as: the workflow's own flow and options, without parameters.

    Prefect keeps a flow run's parameters in its own database and shows them in its UI,
    so an instance's input (personal data, for a workflow with a pii step) would be
    copied out of Stepline's store; it stays there, as a batch's instances' inputs
    already do, and the flow run is named ``<flow>-<instance id prefix>`` instead
    (``stepline show`` finds it). Prefect also no longer encodes the input on every
    instance (through FastAPI's encoder, whose import a command's first run waited on).

    An exception raised in it does not leave it: Prefect would pickle it into its result
    storage (``~/.prefect/storage``, never cleaned), whatever ``persist_result`` says. The
    flow run ends as a failed state naming it instead, and the exception goes on from
    ``_run_held`` (``Scope.ended``). For a workflow holding personal data that state names a
    stand-in with no text of the instance (``Scope.withhold``). Its result is never persisted
    (it carries the personal values put back; Stepline's store has it): ``flows.results``.
    """
    original = workflow.flow
    found = _INSTANCE_FLOWS.get(id(original))
    if found is None:
        with _INSTANCE_FLOWS_LOCK:

            def body() -> Any:
                given, scope = _INPUTS.get(), SCOPE.get()
                assert given is not None, "_run_held sets the instance's input before its flow runs"
                assert scope is not None, "_run_held sets the instance's scope before its flow runs"
                try:
                    scope.result = original.fn(given)
                    return scope.result
                except Exception as exc:
                    shown, raised = scope.withhold(exc), scope.unmask(exc)
                    scope.ended = raised if isinstance(raised, Exception) else exc
                    return Failed(message=f"{type(shown).__name__}: {shown}"[:2000])
                finally:
                    scope.finished.set()

            def run_name() -> str:
                scope = SCOPE.get()
                return f"{original.name}-{scope.instance_id[:8]}" if scope is not None else original.name

            found = flow(
                name=original.name,
                flow_run_name=run_name,
                description=original.description,
                version=original.version,
                retries=original.retries,
                retry_delay_seconds=original.retry_delay_seconds,
                timeout_seconds=original.timeout_seconds,
                log_prints=original.log_prints,
                persist_result=False,
                task_runner=original.task_runner,
                on_completion=original.on_completion_hooks,
                on_failure=[*original.on_failure_hooks, discard_failure_result],
                on_cancellation=original.on_cancellation_hooks,
                on_crashed=original.on_crashed_hooks,
                on_running=original.on_running_hooks,
                validate_parameters=False,
            )(body)
            _INSTANCE_FLOWS[id(original)] = found  # ``found`` holds ``original``: its id is never reused
    return found


def _superseded(runtime: Runtime, scope: Scope, exc: BaseException) -> RunResult:
    """What a run that lost its instance reports: nothing written, and the instance as it is now."""
    try:
        now = runtime.store.get_instance(scope.instance_id)
    except StorageError:
        now = None
    status = InstanceStatus(now.status) if now is not None else InstanceStatus.PAUSED
    holder = (
        f" (now {now.status}, generation {now.generation}, held by {now.worker or 'no one'})" if now else ""
    )
    message = (
        f"this process lost instance {scope.instance_id}{holder}: it was judged dead and the instance "
        "handed on, so it stopped and wrote nothing more"
    )
    _log.warning("%s (%s)", message, exc)
    return RunResult(
        scope.instance_id,
        status,
        failed_step=scope.current_step,
        failure_class=FailureClass.SUPERSEDED.value,
        error=message,
        superseded=True,
    )


def orchestrator_down(exc: BaseException) -> bool:
    """Whether Prefect's API, not the workflow, failed: unreachable, or 429/5xx after its retries.

    Provider errors never get here raw (a step wraps them in ``StepFailed``), so
    an HTTP error escaping the flow is Prefect's client talking to its server.
    """
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    current: BaseException | None = exc
    while current is not None:  # Prefect wraps some, e.g. RuntimeError("Failed to reach API")
        if isinstance(current, PrefectHTTPStatusError):
            return current.response.status_code == 429 or current.response.status_code >= 500
        if isinstance(current, httpx.TransportError):
            return True
        current = current.__cause__
    return False


def interrupt(runtime: Runtime, instance_id: str) -> bool:
    """Pause a running instance because its process is being stopped; a replay resumes it."""
    return runtime.store.interrupt_instance(
        instance_id,
        worker=runtime.worker,
        failure_class=FailureClass.INTERRUPTED.value,
        error="stopped by the operator (Ctrl-C) mid-step; `stepline replay` resumes from that step",
    )


def _interrupted(scope: Scope, exc: Exception) -> RunResult:
    instance = scope.runtime.store.get_instance(scope.instance_id)
    status = InstanceStatus(instance.status) if instance else InstanceStatus.PAUSED
    step = scope.failed_run.step if scope.failed_run else None
    message = f"stopped by the operator; the flow then failed with {type(exc).__name__}: {exc}"
    return RunResult(scope.instance_id, status, None, step, FailureClass.INTERRUPTED.value, message)


def _stopped(workflow: Workflow, runtime: Runtime, scope: Scope, owner: str, exc: StepFailed) -> RunResult:
    """Park the instance where a person can act, and tell its owner.

    The outcome and the review item are one fenced transaction; a run that lost
    the instance meanwhile writes neither (``LeaseLost``) and notifies no one.
    """
    store = runtime.store
    review = None
    run = scope.failed_run
    if exc.failure.behaviour.review and run is not None:
        last = store.last_attempt(run.id)
        review = ReviewItem(
            instance_id=scope.instance_id,
            step_run_id=run.id,
            step=run.step,
            index=run.index,
            failure_class=exc.failure.value,
            raw_output=last.raw_output if last else exc.raw_output,
            expected_schema=store.schema(last.schema_hash) if last else None,
            validation_errors=last.validation_errors if last else None,
        )
        status = InstanceStatus.NEEDS_REVIEW
        action = f"review it: stepline review approve {review.id[:12]} --output <corrected.json>"
    else:
        status = InstanceStatus.PAUSED
        action = f"when the cause is fixed: stepline replay {scope.instance_id[:12]}"
    store.finish_instance(
        scope.fence,
        status,
        failed_step=exc.step,
        failure_class=exc.failure.value,
        error=exc.message,
        review=review,
    )
    if exc.failure.behaviour.notifies:  # not, say, when the operator stopped it: they know
        try:
            _notify_stop(runtime, workflow, scope, owner, exc, status, action)
        except StorageError as error:  # a notification never fails the instance it is about
            _log.warning("could not record the notification for %s: %s", scope.instance_id, error)
    review_id = review.id if review is not None else None
    return RunResult(
        scope.instance_id, status, None, exc.step, exc.failure.value, exc.message, review_id=review_id
    )


def _notify_stop(
    runtime: Runtime,
    workflow: Workflow,
    scope: Scope,
    owner: str,
    exc: StepFailed,
    status: InstanceStatus,
    action: str,
) -> None:
    notify_owner(
        runtime.store,
        runtime.settings.notify,
        instance_id=scope.instance_id,
        owner=owner,
        event=status.value,
        title=f"[stepline] {workflow.name} {scope.instance_id[:12]} {status.value} at {exc.step}",
        fence=scope.fence,
        body=json.dumps(
            {
                "instance": scope.instance_id,
                "workflow": workflow.name,
                "status": status.value,
                "step": exc.step,
                "failure_class": exc.failure.value,
                "next": action,  # no error text: it can echo the model's output or pii input
            },
            indent=2,
        ),
    )
