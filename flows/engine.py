"""Where steps meet Prefect and storage.

``run_step`` is what a workflow's ``@flow`` calls: it runs the step as a
Prefect task named after the step, records a StepRun and every attempt, and
returns the validated output (or raises ``StepFailed``). ``run_workflow``
starts an instance: it validates the input, checks that every step can be
routed, creates the instance row, runs the flow and records how it ended.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel, ValidationError

from flows.workflow import Workflow
from steps.definition import Prompt, Step
from steps.errors import DefinitionError, InputError, StepFailed, StepLineError
from steps.routing import choose_route
from steps.runtime import AttemptRecord, StepExecutor
from steps.settings import Settings, load_settings
from storage.db import open_engine
from storage.models import Attempt, InstanceStatus, StepRunStatus
from storage.store import Store

__all__ = ["RunResult", "Runtime", "run_step", "run_workflow"]

OutT = TypeVar("OutT", bound=BaseModel)


@dataclass
class Runtime:
    """Settings, storage and the step executor shared by every flow in a process."""

    settings: Settings
    store: Store
    executor: StepExecutor

    @classmethod
    def open(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or load_settings()
        store = Store(open_engine(settings.database_url))
        return cls(settings, store, StepExecutor(settings))

    def close(self) -> None:
        """Release provider connections and database connections."""
        self.executor.close()
        self.store.engine.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class _Scope:
    runtime: Runtime
    instance_id: str
    flow_run_id: str | None = None
    on_step: Callable[[str], None] | None = None
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_index(self, step: str) -> int:
        with self.lock:
            index = self.counts[step]
            self.counts[step] += 1
            return index


_SCOPE: ContextVar[_Scope | None] = ContextVar("stepline_instance", default=None)
_TASKS: dict[int, Task[..., Any]] = {}
_TASKS_LOCK = threading.Lock()


class _StoreSink:
    """Persists each attempt of one step run as soon as it ends."""

    def __init__(self, store: Store, author: str, instance_id: str, step_run_id: str) -> None:
        self.store = store
        self.author = author
        self.instance_id = instance_id
        self.step_run_id = step_run_id
        self.count = 0
        self.model_id: str | None = None

    def prompt_version(self, step: str, prompt: Prompt) -> str:
        return self.store.prompt_version(step, prompt.system, prompt.user, prompt.content_hash, self.author)

    def attempt_finished(self, record: AttemptRecord) -> str:
        self.count += 1
        self.model_id = record.model_id
        return self.store.add_attempt(
            Attempt(
                instance_id=self.instance_id,
                step_run_id=self.step_run_id,
                step=record.step,
                attempt_number=record.attempt_number,
                provider=record.provider,
                model_id=record.model_id,
                provider_model=record.provider_model,
                routing_reason=record.routing_reason,
                prompt_version_id=record.prompt_version_id,
                sampling=record.sampling,
                request_messages=record.request_messages,
                raw_output=record.raw_output,
                raw_response=record.raw_response,
                parsed_output=record.parsed_output,
                expected_schema=record.expected_schema,
                failure_class=record.failure.value if record.failure else None,
                error_message=record.error_message,
                validation_errors=record.validation_errors,
                tokens_in=record.tokens_in,
                tokens_out=record.tokens_out,
                cost_usd=record.cost_usd,
                latency_ms=record.latency_ms,
                retry_after_s=record.retry_after_s,
                wait_s=record.wait_s,
                started_at=record.started_at,
                finished_at=record.finished_at,
            )
        )


def _scope() -> _Scope:
    scope = _SCOPE.get()
    if scope is None:
        raise StepLineError(
            "run_step was called outside a workflow instance; start flows with "
            "flows.run_workflow(...) or `stepline run`"
        )
    return scope


def _execute(step: Step[Any, OutT], inputs: BaseModel, index: int) -> OutT:
    scope = _scope()
    store = scope.runtime.store
    run = store.start_step_run(scope.instance_id, step.name, index, inputs.model_dump(mode="json"))
    sink = _StoreSink(store, scope.runtime.settings.author, scope.instance_id, run.id)
    try:
        output = scope.runtime.executor.run(step, inputs, sink)
    except BaseException as exc:
        failure = exc.failure.value if isinstance(exc, StepFailed) else None
        store.finish_step_run(
            run.id, StepRunStatus.FAILED, attempts=sink.count, model_id=sink.model_id, failure_class=failure
        )
        raise
    store.finish_step_run(
        run.id,
        StepRunStatus.COMPLETED,
        attempts=sink.count,
        model_id=sink.model_id,
        output=output.model_dump(mode="json"),
    )
    return output


def _task_for(step: Step[Any, OutT]) -> Task[..., OutT]:
    key = id(step)
    found = _TASKS.get(key)
    if found is None:
        with _TASKS_LOCK:

            def call(inputs: BaseModel, index: int) -> OutT:
                return _execute(step, inputs, index)

            # Results live in Stepline's own store; Prefect's cache and result
            # persistence would only add cost per step.
            found = task(name=step.name, cache_policy=NO_CACHE, persist_result=False)(call)
            _TASKS[key] = found
    return found


def run_step(step: Step[Any, OutT], inputs: BaseModel) -> OutT:
    """Run ``step`` on ``inputs`` as a Prefect task of the current workflow instance."""
    scope = _scope()
    if scope.flow_run_id is None:
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            scope.flow_run_id = str(context.flow_run.id)
            scope.runtime.store.set_flow_run(scope.instance_id, scope.flow_run_id)
    if scope.on_step is not None:
        scope.on_step(step.name)
    return _task_for(step)(inputs, scope.next_index(step.name))


@dataclass(frozen=True)
class RunResult:
    instance_id: str
    status: InstanceStatus
    output: BaseModel | None = None
    failed_step: str | None = None
    failure_class: str | None = None
    error: str | None = None


def parse_input(workflow: Workflow, payload: Mapping[str, Any] | BaseModel, where: str) -> BaseModel:
    """The payload as the workflow's input model, or an ``InputError`` naming each bad field."""
    if isinstance(payload, workflow.input_model):
        return payload
    try:
        return workflow.input_model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        fields = ", ".join(workflow.input_model.model_fields)
        raise InputError(
            f"{where} does not match {workflow.name}'s input ({workflow.input_model.__name__}: "
            f"{fields}): {problems}"
        ) from None


def run_workflow(
    workflow: Workflow,
    payload: Mapping[str, Any] | BaseModel,
    runtime: Runtime,
    *,
    owner: str | None = None,
    where: str = "input",
    on_step: Callable[[str], None] | None = None,
) -> RunResult:
    """Run one instance of ``workflow`` to completion or to its failing step."""
    inputs = parse_input(workflow, payload, where)
    for step in workflow.steps:  # fail before anything is written if a step cannot be routed
        choose_route(step, runtime.settings)
    instance = runtime.store.create_instance(
        workflow.name, inputs.model_dump(mode="json"), owner or runtime.settings.owner
    )
    token = _SCOPE.set(_Scope(runtime, instance.id, on_step=on_step))
    try:
        output = workflow.flow(inputs)
        if not isinstance(output, workflow.output_model):
            raise DefinitionError(
                f"workflow {workflow.name!r} returned {type(output).__name__}, "
                f"not its output model {workflow.output_model.__name__}"
            )
    except StepFailed as exc:
        runtime.store.finish_instance(
            instance.id,
            InstanceStatus.FAILED,
            failed_step=exc.step,
            failure_class=exc.failure.value,
            error=exc.message,
        )
        return RunResult(instance.id, InstanceStatus.FAILED, None, exc.step, exc.failure.value, exc.message)
    except BaseException as exc:
        runtime.store.finish_instance(
            instance.id, InstanceStatus.FAILED, failure_class="unknown", error=f"{type(exc).__name__}: {exc}"
        )
        raise
    finally:
        _SCOPE.reset(token)
    runtime.store.finish_instance(
        instance.id, InstanceStatus.COMPLETED, output=output.model_dump(mode="json")
    )
    return RunResult(instance.id, InstanceStatus.COMPLETED, output)
