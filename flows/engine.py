"""Where steps meet Prefect and storage.

``run_step`` is what a workflow's ``@flow`` calls: it runs the step as a
Prefect task named after the step, records a StepRun and every attempt, and
returns the validated output (or raises ``StepFailed``). On a replay, a step
whose output is already known (completed earlier, or approved by a reviewer)
returns that output without calling any provider.

Which instance a step belongs to travels in a context variable set by
``flows.instances`` for the duration of one flow run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel

from flows import local_server
from flows.recovery import Heartbeat
from steps.definition import Prompt, Sensitivity, Step
from steps.errors import FailureClass, StepFailed, StepLineError, Superseded
from steps.pii import PiiGuard
from steps.providers import ProviderPool
from steps.runtime import AttemptRecord, StepExecutor
from steps.settings import Settings, load_settings
from storage.db import open_engine
from storage.models import Attempt, StepRun, StepRunStatus
from storage.store import Fence, LeaseLost, StorageError, Store

__all__ = [
    "SCOPE",
    "Runtime",
    "Scope",
    "ensure_prefect_api",
    "run_step",
    "with_current_prompt",
]

OutT = TypeVar("OutT", bound=BaseModel)


@dataclass
class Runtime:
    """Settings, storage and the step executor shared by every flow in a process."""

    settings: Settings
    store: Store
    executor: StepExecutor
    heartbeat: Heartbeat

    @property
    def worker(self) -> str:
        """This process, as the instances it runs name it."""
        return self.heartbeat.worker

    @classmethod
    def open(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or load_settings()
        store = Store(open_engine(settings.database_url))
        pool = None
        if settings.shared_limits:
            from flows.shared_limits import PrefectGate, ensure_shared_limits

            ensure_prefect_api()
            ensure_shared_limits(settings)
            pool = ProviderPool(settings.providers, settings.models, gate_factory=PrefectGate)
        return cls(
            settings,
            store,
            StepExecutor(settings, pool, latency=_Cached(store.median_latency_by_model)),
            Heartbeat(store, settings.workers.heartbeat_s),
        )

    def close(self) -> None:
        """Stop renewing leases; release provider connections and this process's shared engine."""
        self.heartbeat.stop()
        self.executor.close()
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _Cached:
    """A store query re-run at most every ``ttl`` seconds (routing reads it per step)."""

    def __init__(self, query: Callable[[], dict[str, float]], ttl: float = 30.0) -> None:
        self._query = query
        self._ttl = ttl
        self._value: dict[str, float] = {}
        self._at = -math.inf
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, float]:
        with self._lock:
            if time.monotonic() - self._at > self._ttl:
                try:
                    self._value = self._query()
                except StorageError as exc:  # routing then goes on what it knew: not worth a stop
                    _log.warning("could not read observed latencies: %s", exc)
                self._at = time.monotonic()
            return self._value


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
    failed_run: StepRun | None = None
    current_step: str | None = None
    """The step this flow run reached last (where an orchestrator failure stopped it)."""
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    guard: PiiGuard | None = None
    """For a workflow with a pii step: the instance's personal data, learned from its input and
    its pii steps' inputs and outputs, kept out of every request to a non-private model."""

    @property
    def instance_id(self) -> str:
        return self.fence.instance_id

    def next_index(self, step: str) -> int:
        with self.lock:
            index = self.counts[step]
            self.counts[step] += 1
            return index

    def check_held(self, step: str) -> None:
        """Stop before ``step`` if the heartbeat found this run's lease handed on."""
        if self.runtime.heartbeat.is_lost(self.instance_id):
            raise Superseded(
                f"instance {self.instance_id} changed hands (its lease lapsed and it was recovered "
                f"or replayed elsewhere); this process stopped before step {step!r}"
            )


_log = logging.getLogger("stepline")

SCOPE: ContextVar[Scope | None] = ContextVar("stepline_instance", default=None)
_TASKS: dict[int, Task[..., Any]] = {}
_TASKS_LOCK = threading.Lock()


class _StoreSink:
    """Persists one step run and each of its attempts, in as few commits as stay safe.

    The step run is written with its first request, and the request is written
    before it is sent. A failed attempt's outcome is written at once, while a
    successful attempt's outcome travels with the step run's finish, which
    follows it with no I/O in between. A crash in that window leaves the
    attempt in flight, so recovery marks it and a replay asks again.

    Every write is fenced by the scope's token. Once one is refused
    (``LeaseLost``) the sink raises ``Superseded`` and keeps the late answer,
    if one came, only as a superseded attempt for audit.
    """

    def __init__(self, scope: Scope, run: StepRun) -> None:
        self.store = scope.runtime.store
        self.author = scope.runtime.settings.author
        self.fence = scope.fence
        self.generation = scope.generation
        self.run = run
        self.written = False
        self.count = 0
        self.model_id: str | None = None
        self.deferred: tuple[str, dict[str, Any]] | None = None

    def prompt_version(self, step: str, prompt: Prompt) -> str:
        return self.store.prompt_version(step, prompt.system, prompt.user, prompt.content_hash, self.author)

    def attempt_started(self, record: AttemptRecord) -> str:
        attempt = Attempt(
            instance_id=self.run.instance_id,
            step_run_id=self.run.id,
            step=record.step,
            attempt_number=record.attempt_number,
            provider=record.provider,
            model_id=record.model_id,
            provider_model=record.provider_model,
            routing_reason=record.routing_reason,
            prompt_version_id=record.prompt_version_id,
            sampling=record.sampling,
            request_messages=record.request_messages,
            wait_s=record.wait_s,
            pii=record.pii,
            started_at=record.started_at,
        )
        try:
            attempt_id = self.store.start_attempt(
                self.fence,
                attempt,
                step_run=None if self.written else self.run,
                schema=record.expected_schema,
            )
        except LeaseLost as exc:
            raise self._superseded(exc) from None
        self.written = True
        return attempt_id

    def attempt_finished(self, record: AttemptRecord) -> None:
        self.count += 1
        self.model_id = record.model_id
        assert record.attempt_id is not None, "attempt_finished before attempt_started"
        outcome = {
            "raw_output": record.raw_output,
            "raw_response": record.raw_response,
            "parsed_output": record.parsed_output,
            "failure_class": record.failure.value if record.failure else None,
            "error_message": record.error_message,
            "validation_errors": record.validation_errors,
            "tokens_in": record.tokens_in,
            "tokens_out": record.tokens_out,
            "cost_usd": record.cost_usd,
            "latency_ms": record.latency_ms,
            "retry_after_s": record.retry_after_s,
            "pii": record.pii,
            "finished_at": record.finished_at,
        }
        if record.ok:  # the step ends now: written with the step run's finish
            self.deferred = (record.attempt_id, outcome)
            return
        try:
            self.store.finish_attempt(self.fence, record.attempt_id, **outcome)
        except LeaseLost as exc:
            self._keep_late_answer(record.attempt_id, outcome)
            raise self._superseded(exc) from None

    def finish(self, status: StepRunStatus, *, output: Any = None, failure_class: str | None = None) -> None:
        deferred, self.deferred = self.deferred, None
        try:
            self.store.finish_step_run(
                self.fence,
                self.run.id,
                status,
                attempts=self.count,
                model_id=self.model_id,
                output=output,
                failure_class=failure_class,
                insert=None if self.written else self.run,
                last_attempt=deferred,
            )
        except LeaseLost as exc:
            if deferred is not None:
                self._keep_late_answer(*deferred)
            raise self._superseded(exc) from None
        self.written = True

    def _keep_late_answer(self, attempt_id: str, outcome: dict[str, Any]) -> None:
        try:
            self.store.record_late_answer(attempt_id, self.generation, outcome)
        except StorageError as exc:  # audit only: the instance is someone else's either way
            _log.warning("could not keep a late answer for audit: %s", exc)

    def _superseded(self, exc: LeaseLost) -> Superseded:
        return Superseded(
            f"instance {exc.instance_id} changed hands while this process ran step {self.run.step!r} "
            "(its lease lapsed and it was recovered or replayed elsewhere); this process stopped "
            "and wrote nothing more for it"
        )


def ensure_prefect_api() -> None:
    """Make sure this process talks to a Prefect API server before flows run.

    The configured one (PREFECT_API_URL, a Prefect profile) if any, else Stepline's shared
    local server (``flows.local_server``), started on first need. Commands point Prefect at it
    before importing Prefect; this covers callers that imported it first (library use, the
    benchmarks). Without it Prefect would start its own temporary server in this process: not
    thread-safe to start, 10-15 s per process, and left running when the process is killed.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    ensured = local_server.ensure()  # Prefect is loaded: its settings are refreshed to the URL
    if ensured is not None and ensured.started:
        print(local_server.announcement(ensured), file=sys.stderr)


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
    run = StepRun(
        instance_id=scope.instance_id,
        step=step.name,
        index=index,
        input=inputs.model_dump(mode="json"),
        generation=scope.generation,
    )
    sink = _StoreSink(scope, run)
    try:
        output = scope.runtime.executor.run(step, inputs, sink, scope.guard)
    except Superseded:
        raise  # the instance is someone else's now: nothing more is written
    except BaseException as exc:
        failure = exc.failure.value if isinstance(exc, StepFailed) else None
        scope.failed_run = run
        # If this write fails, the instance's own stop closes the run (``finish_instance``),
        # or recovery does.
        with contextlib.suppress(StorageError):
            sink.finish(StepRunStatus.FAILED, failure_class=failure)
        raise
    try:
        sink.finish(StepRunStatus.COMPLETED, output=output.model_dump(mode="json"))
    except StorageError as exc:
        scope.failed_run = run
        raise StepFailed(
            f"step {step.name!r} answered but its output could not be recorded: {exc}",
            step=step.name,
            failure=FailureClass.STORAGE,
        ) from None
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
            try:
                scope.runtime.store.set_flow_run(scope.fence, scope.flow_run_id)
            except LeaseLost:
                scope.check_held(step.name)
                raise Superseded(f"instance {scope.instance_id} changed hands before it started") from None
            except StorageError as exc:
                raise StepFailed(
                    f"could not record the flow run before step {step.name!r}: {exc}",
                    step=step.name,
                    failure=FailureClass.STORAGE,
                ) from None
    index = scope.next_index(step.name)
    personal = scope.guard is not None and step.sensitivity is Sensitivity.PII
    if personal:
        assert scope.guard is not None
        scope.guard.learn(inputs)
    known = scope.reusable.get((step.name, index))
    if known is not None:  # replay: completed before (or approved by a reviewer)
        if personal:
            assert scope.guard is not None
            scope.guard.learn(known, whole=True)
        return step.output_model.model_validate(known)
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
    output = _task_for(step)(inputs, index)
    if personal:
        assert scope.guard is not None
        scope.guard.learn(output, whole=True)  # what the private model extracted is personal too
    return output
