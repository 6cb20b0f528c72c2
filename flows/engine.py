"""Where steps meet Prefect: ``run_step`` and the scope of one instance's flow run.

``run_step`` is what a workflow's ``@flow`` calls: it runs the step as a
Prefect task named after the step, records its step run and every attempt, and
returns the validated output (or raises ``StepFailed``). On a replay, a step
whose output is already known (completed earlier, or approved by a reviewer)
returns that output without calling any provider.

Which instance a step belongs to travels in a context variable set by
``flows.instances`` for the duration of one flow run.

For an instance of a workflow holding personal data (``steps.privacy``), a step
runs only once the fields its analysis counted as clean are shown to be so; a
personal step's outputs go to the instance's guard, a clean step's come back as
``Declassified`` text. And nothing of the instance reaches Prefect's records: an
exception that leaves a task or flow run there is a stand-in naming the step, the
failure class and the attempt, while the original stays in this process for
Stepline's own store (``Scope.withhold`` and ``Scope.unmask``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel

from flows.runtime import Runtime
from flows.sink import StoreSink
from steps.definition import Prompt, Step
from steps.errors import FailureClass, StepFailed, StepLineError, Superseded
from steps.pii import PiiGuard
from steps.privacy import NotCleared, Origin, StepPrivacy, WorkflowPrivacy, check_cleared, clear_leaves
from steps.runtime import Clearance
from storage.models import NewStepRun, StepRunStatus
from storage.store import Fence, LeaseLost, StorageError, Store

__all__ = ["SCOPE", "Scope", "Withheld", "run_step", "with_current_prompt"]

OutT = TypeVar("OutT", bound=BaseModel)


@dataclass
class Scope:
    """One flow run of one instance: where its step runs and attempts are recorded."""

    runtime: Runtime
    fence: Fence
    """The token this run holds the instance under: every write it makes names it."""
    generation: int = 0
    reusable: dict[tuple[str, int], Any] = field(default_factory=dict)
    """Outputs known from earlier generations, by (step, index): not recomputed."""
    flow_run_id: str | None = None
    on_step: Callable[[str], None] | None = None
    cancel: threading.Event | None = None
    """Set when the operator stops a batch: the instance pauses before its next step."""
    failed_run: NewStepRun | None = None
    current_step: str | None = None
    """The step this flow run reached last (where an orchestrator failure stopped it)."""
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    inline: bool = False
    """Run the workflow's function inside the current flow run (a batch's) rather than as a
    flow run of its own; its steps are still task runs, of the batch's flow run."""
    privacy: WorkflowPrivacy | None = None
    """Its workflow's privacy analysis: where each step may run (``steps.privacy``)."""
    declassifiers: frozenset[str] = frozenset()
    """The declassifiers its workflow names: the only ones whose text may reach a public model."""
    guard: PiiGuard | None = None
    """For a workflow holding personal data: the instance's personal values (its ``Personal``
    inputs, its personal steps' outputs), checked in every request to a non-private model."""
    withheld: list[tuple[BaseException, BaseException]] = field(default_factory=list)
    """For a workflow holding personal data: each exception shown to Prefect, and the original
    it stands for."""
    ended: Exception | None = None
    """The exception that ended the instance's own flow run, which Prefect was told of only as
    a failed state (``flows.running``)."""
    result: BaseModel | None = None
    """What the workflow's function returned in the instance's own flow run, whether or not
    Prefect then recorded the end."""
    finished: threading.Event = field(default_factory=threading.Event)
    """Set once the workflow's function returned or raised: Stepline's work is done, and the
    flow call waits only a grace period for Prefect (``flows.orchestrator``)."""

    @property
    def instance_id(self) -> str:
        return self.fence.instance_id

    def next_index(self, step: str) -> int:
        with self.lock:
            index = self.counts[step]
            self.counts[step] += 1
            return index

    @property
    def personal(self) -> bool:
        return self.privacy is not None and self.privacy.holds_personal_data

    def step_privacy(self, step: Step[Any, Any]) -> StepPrivacy:
        return self.privacy.of(step) if self.privacy is not None else StepPrivacy.alone(step)

    def clearance(self, step: Step[Any, Any], inputs: BaseModel) -> Clearance:
        """Where ``step`` may run with ``inputs``; a ``pii_blocked`` failure, before any request,
        when a field the analysis counted as clean holds something else."""
        privacy = self.step_privacy(step)
        if not privacy.holds_personal_data or privacy.private_only:
            return Clearance(privacy, guard=self.guard)
        try:
            declassified = check_cleared(privacy, inputs, self.declassifiers)
        except NotCleared as exc:
            raise StepFailed(exc.message, step=step.name, failure=FailureClass.PII_BLOCKED) from None
        return Clearance(privacy, declassified, self.guard)

    def received(self, privacy: StepPrivacy, output: OutT) -> OutT:
        """A step's output as the flow gets it: a personal step's values go to the guard, a
        clean step's text comes back ``Declassified``."""
        if not privacy.holds_personal_data:
            return output
        if privacy.private_only:
            if self.guard is not None:
                for name in privacy.personal_outputs:
                    self.guard.learn(getattr(output, name), f"{privacy.step}.{name}")
            return output
        cleared: OutT = clear_leaves(output, Origin("step", privacy.step))
        return cleared

    def withhold(self, exc: BaseException) -> BaseException:
        """What Prefect may be shown of ``exc``: itself, unless the instance holds personal data.

        Then a stand-in: a ``StepFailed`` naming the step, its failure class and last attempt,
        or a ``Withheld`` naming the exception's type, with no message, raw output or cause,
        so that no text of the instance reaches Prefect's states, events, logs or result
        storage. ``unmask`` gives the original back.
        """
        if not self.personal or not isinstance(exc, Exception) or isinstance(exc, Superseded | LeaseLost):
            return exc
        if any(exc is shown for shown, _ in self.withheld):
            return exc
        stand_in: Exception
        see = f"the details stay in Stepline's store: `stepline show {self.instance_id[:12]}`"
        if isinstance(exc, StepFailed):
            attempt = f", attempt {exc.attempt_id}" if exc.attempt_id else ""
            stand_in = exc.retold(
                f"step {exc.step!r} failed: {exc.failure.value}{attempt}; {see}", with_output=False
            )
        else:
            at = f" after reaching step {self.current_step!r}" if self.current_step else ""
            stand_in = Withheld(f"{type(exc).__name__}{at}; {see}")
        self.withheld.append((stand_in, exc))
        return stand_in

    def unmask(self, exc: BaseException) -> BaseException:
        """The original of a stand-in ``withhold`` made (matched by identity, else by message:
        Prefect may hand back a copy); any other exception as it is."""
        for shown, original in self.withheld:
            if exc is shown or (type(exc) is type(shown) and str(exc) == str(shown)):
                return original
        return exc

    def check_held(self, step: str) -> None:
        """Stop before ``step`` if the heartbeat found this run's lease handed on."""
        if self.runtime.heartbeat.is_lost(self.instance_id):
            raise Superseded(
                f"instance {self.instance_id} changed hands (its lease lapsed and it was recovered "
                f"or replayed elsewhere); this process stopped before step {step!r}"
            )


class Withheld(StepLineError):
    """Stands in, in Prefect's records, for an exception of an instance holding personal data:
    its type and step only. The original is what Stepline records (``Scope.unmask``)."""


_log = logging.getLogger("stepline")

SCOPE: ContextVar[Scope | None] = ContextVar("stepline_instance", default=None)
_TASKS: dict[tuple[int, bool], Task[..., Any]] = {}
_CALL: ContextVar[tuple[BaseModel, int] | None] = ContextVar("stepline_step_call", default=None)
"""The inputs and index of the step whose task is being called.

Passed beside the Prefect task rather than as its parameters: Prefect walks a task's
parameters on every call (to resolve futures and record upstream task runs), which
for a step's input model cost about 0.4 ms per step and gave nothing here, since a
step's inputs are values, never futures, and its step run stores them already.
"""
_TASKS_LOCK = threading.Lock()


def _scope() -> Scope:
    scope = SCOPE.get()
    if scope is None:
        raise StepLineError(
            "run_step was called outside a workflow instance; start flows with "
            "flows.instances.run_workflow(...) or `stepline run`"
        )
    return scope


def with_current_prompt(step: Step[Any, OutT], store: Store) -> Step[Any, OutT]:
    """``step`` with the prompt an operator chose for it (``stepline tui``), if any.

    Looked up on every step run (the store re-reads it at most once a second), so
    an edit takes effect on the next replay in any process; re-checked like a
    prompt in code (its placeholders must be input fields).
    """
    chosen = store.current_prompt(step.name)
    if chosen is None or chosen.content_hash == step.prompt.content_hash:
        return step
    return dataclasses.replace(step, prompt=Prompt(system=chosen.system, user=chosen.template))


def _execute(step: Step[Any, OutT], inputs: BaseModel, index: int) -> OutT:
    scope = _scope()
    store = scope.runtime.store
    step = with_current_prompt(step, store)
    run = NewStepRun(
        instance_id=scope.instance_id,
        step=step.name,
        index=index,
        input=inputs.model_dump(mode="json"),
        generation=scope.generation,
    )
    sink = StoreSink(store, scope.fence, scope.generation, run)
    try:
        clearance = scope.clearance(step, inputs)
        output = scope.received(clearance.privacy, scope.runtime.executor.run(step, inputs, sink, clearance))
    except Superseded:
        raise  # the instance is someone else's now: nothing more is written
    except BaseException as exc:
        failure = exc.failure.value if isinstance(exc, StepFailed) else None
        scope.failed_run = run
        # If this write fails, the instance's own stop closes the run (``finish_instance``),
        # or recovery does.
        with contextlib.suppress(StorageError):
            sink.finish(StepRunStatus.FAILED, failure_class=failure)
        shown = scope.withhold(exc)
        if shown is exc:
            raise
        raise shown from None
    try:
        sink.finish(StepRunStatus.COMPLETED, output=output.model_dump(mode="json"))
    except StorageError as exc:
        scope.failed_run = run
        failed = StepFailed(
            f"step {step.name!r} answered but its output could not be recorded: {exc}",
            step=step.name,
            failure=FailureClass.STORAGE,
        )
        raise scope.withhold(failed) from None
    return output


def _task_for(step: Step[Any, OutT], *, named: bool) -> Task[..., OutT]:
    """The Prefect task running ``step`` (one per step, built once).

    ``named``: each task run is named after its instance too, for a batch's flow run, which holds
    many instances' task runs. An instance's own flow run is named after the instance already, and
    Prefect inspects a naming callable's signature on every task run, so there it is left out.
    """
    key = (id(step), named)
    found = _TASKS.get(key)
    if found is None:
        with _TASKS_LOCK:

            def call() -> OutT:
                given = _CALL.get()
                assert given is not None, "run_step sets the step's inputs before calling its task"
                return _execute(step, *given)

            def run_name() -> str:  # which instance: a batch's task runs share one flow run
                scope = SCOPE.get()
                return f"{step.name}-{scope.instance_id[:8]}" if scope is not None else step.name

            # Results live in Stepline's own store; Prefect's cache and result
            # persistence would only add cost per step.
            found = task(
                name=step.name,
                task_run_name=run_name if named else None,
                cache_policy=NO_CACHE,
                persist_result=False,
            )(call)
            _TASKS[key] = found
    return found


def run_step(step: Step[Any, OutT], inputs: BaseModel) -> OutT:
    """Run ``step`` on ``inputs`` as a Prefect task of the current workflow instance."""
    scope = _scope()
    if scope.flow_run_id is None:
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            scope.flow_run_id = str(context.flow_run.id)
            try:
                scope.runtime.store.set_flow_run(scope.fence, scope.flow_run_id)
            except LeaseLost:
                scope.check_held(step.name)
                raise Superseded(f"instance {scope.instance_id} changed hands before it started") from None
            except StorageError as exc:
                failed = StepFailed(
                    f"could not record the flow run before step {step.name!r}: {exc}",
                    step=step.name,
                    failure=FailureClass.STORAGE,
                )
                raise scope.withhold(failed) from None
    index = scope.next_index(step.name)
    known = scope.reusable.get((step.name, index))
    if known is not None:  # replay: completed before (or approved by a reviewer)
        output = step.output_model.model_validate(known)
        if not scope.personal:
            return output
        return scope.received(scope.step_privacy(with_current_prompt(step, scope.runtime.store)), output)
    if scope.cancel is not None and scope.cancel.is_set():
        raise StepFailed(
            f"stopped by the operator before step {step.name!r} ran",
            step=step.name,
            failure=FailureClass.INTERRUPTED,
        )
    scope.check_held(step.name)
    scope.current_step = step.name
    if scope.on_step is not None:
        scope.on_step(step.name)
    token = _CALL.set((inputs, index))
    try:
        return _task_for(step, named=scope.inline)()
    finally:
        _CALL.reset(token)
