"""The attempt sink: how a step's runs and attempts reach the store, fenced, in few commits."""

from __future__ import annotations

import logging
from typing import Any

from steps.definition import Prompt
from steps.errors import Superseded
from steps.runtime import AttemptRecord
from storage.models import NewStepRun, StepRunStatus
from storage.store import Fence, LeaseLost, StorageError, Store

__all__ = ["CODE_AUTHOR", "StoreSink"]

_log = logging.getLogger("stepline")


CODE_AUTHOR = "code"
"""The author of a prompt version that came from a workflow's code."""


class StoreSink:
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

    def __init__(self, store: Store, fence: Fence, generation: int, run: NewStepRun) -> None:
        self.store = store
        self.fence = fence
        self.generation = generation
        self.run = run
        self.written = False
        self.count = 0
        self.model_id: str | None = None
        self.deferred: tuple[str, dict[str, Any]] | None = None

    def prompt_version(self, step: str, prompt: Prompt) -> str:
        # A version first seen here comes from the workflow's code: an operator's edit is stored,
        # under the operator's name, when it is saved (``stepline tui``).
        return self.store.prompt_version(step, prompt.system, prompt.user, prompt.content_hash, CODE_AUTHOR)

    def attempt_started(self, record: AttemptRecord) -> str:
        attempt = {  # plain values, not an ``Attempt``: building a table model costs more than the INSERT
            "instance_id": self.run.instance_id,
            "step_run_id": self.run.id,
            "step": record.step,
            "attempt_number": record.attempt_number,
            "provider": record.provider,
            "model_id": record.model_id,
            "provider_model": record.provider_model,
            "routing_reason": record.routing_reason,
            "prompt_version_id": record.prompt_version_id,
            "sampling": record.sampling,
            "request_messages": record.request_messages,
            "wait_s": record.wait_s,
            "pii": record.pii,
            "started_at": record.started_at,
        }
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
            "wait_s": record.wait_s,  # the rate limit's wait is taken as the request leaves
            "pii": record.pii,
            "truncated": record.truncated,
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
