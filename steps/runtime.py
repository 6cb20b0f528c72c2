"""Runs one step: route, render, call through Instructor, and report every attempt.

Instructor performs the re-asks after a schema failure; its hooks tell us
where each request starts and ends, so that every request (the first one and
each re-ask) becomes its own ``AttemptRecord``, handed to the ``AttemptSink``
before it is sent and again when it ends. The sink persists both, so even a
process killed mid-request leaves a record of the request it had in flight.
A request whose record could not be written is never sent
(``steps.providers.write_ahead``): the step fails as ``storage``, or stops as
``Superseded`` when the sink says the instance changed hands.
Where a step may go is its ``Clearance``'s to say (``steps.privacy``), and a
request to a non-private model for an instance holding personal data leaves
only once its exact bytes pass the instance's guard (``steps.pii``).
This module knows nothing about databases or Prefect.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from steps.classify import classify_exception, response_limit, retry_after_seconds
from steps.definition import Prompt, Step
from steps.errors import (
    DefinitionError,
    FailureClass,
    Fallback,
    StepFailed,
    StepLineError,
    Superseded,
)
from steps.pii import Constants, Leak, PiiGuard, Rendered
from steps.privacy import Carries, StepPrivacy
from steps.providers import ModelClient, ProviderPool, capture_bodies, write_ahead
from steps.retry import RetryPolicy
from steps.routing import Route, choose_route, escalation_route, fallback_chain
from steps.settings import Settings

__all__ = ["AttemptRecord", "AttemptSink", "Clearance", "MemorySink", "StepExecutor", "validation_errors"]

OutT = TypeVar("OutT", bound=BaseModel)


@dataclass
class AttemptRecord:
    """One request to a model and what came of it."""

    step: str
    attempt_number: int
    model_id: str
    provider: str
    provider_model: str
    routing_reason: str
    prompt_version_id: str
    sampling: dict[str, Any]
    request_messages: list[dict[str, Any]]
    started_at: datetime
    finished_at: datetime | None = None
    latency_ms: float | None = None
    raw_output: str | None = None
    raw_response: str | None = None
    parsed_output: dict[str, Any] | None = None
    expected_schema: dict[str, Any] | None = None
    """The output schema the answer is validated against: known before the request is sent."""
    failure: FailureClass | None = None
    error_message: str | None = None
    validation_errors: list[dict[str, Any]] | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    retry_after_s: float | None = None
    wait_s: float | None = None
    """Seconds waited (backoff, retry-after or client-side rate limit) before this was sent."""
    pii: dict[str, Any] | None = None
    """Privacy of this request, never a value: ``declassified`` (field -> what cleared the text it
    carried), ``blocked`` (the instance's personal values found as it left, so it was not sent:
    each ``{kind, source, where}``)."""
    truncated: dict[str, int] | None = None
    """Texts cut to ``Settings.max_stored_bytes`` before they were stored: field -> its size as
    received, in UTF-8 bytes."""
    response_failure: FailureClass | None = field(default=None, repr=False)
    attempt_id: str | None = None
    """The sink's id for this attempt, once ``attempt_started`` recorded it."""

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class Clearance:
    """What one step run may reveal, and to whom: decided before its first request."""

    privacy: StepPrivacy
    """Where the step may run (``steps.privacy``): the router's privacy rule."""
    declassified: Mapping[str, str] = field(default_factory=dict)
    """Rendered fields holding cleared text -> what cleared it; recorded on every attempt."""
    guard: PiiGuard | None = None
    """The instance's personal values, checked in each request to a non-private model."""

    @classmethod
    def alone(cls, step: Step[Any, Any]) -> Clearance:
        """For a step run outside any workflow instance: only its own declaration counts."""
        return cls(StepPrivacy.alone(step))

    @property
    def typed(self) -> frozenset[str]:
        """Rendered fields clean by their type (validated before the step ran): not the guard's."""
        return frozenset(f.name for f in self.privacy.rendered if f.carries is Carries.NO_TEXT)


class AttemptSink(Protocol):
    """Where attempts go as they end (storage implements it; tests may too)."""

    def prompt_version(self, step: str, prompt: Prompt) -> str:
        """The id of the PromptVersion for this exact prompt text (created if new)."""
        ...

    def attempt_started(self, record: AttemptRecord) -> str:
        """Durably record a request about to be sent; its id.

        Raises ``Superseded`` when the instance changed hands, anything else when
        the record cannot be written: either way the request is not sent.
        """
        ...

    def attempt_finished(self, record: AttemptRecord) -> None:
        """Durably complete the record of ``attempt_started`` with the outcome (raises as above)."""
        ...


class MemorySink:
    """An attempt sink that keeps the attempts in lists and writes nothing.

    For the probes (``stepline probe``, ``stepline consistency``), which make no instance,
    step run or attempt row, and for tests of the executor. ``prompt_version`` is asked once
    for the id every attempt refers to (none: ``id_prefix``).
    """

    def __init__(
        self, id_prefix: str = "memory", prompt_version: Callable[[str, Prompt], str] | None = None
    ) -> None:
        self.started: list[AttemptRecord] = []
        self.finished: list[AttemptRecord] = []
        self.version_id: str | None = None
        self._prefix = id_prefix
        self._ids = itertools.count(1)
        self._prompt_version = prompt_version

    def prompt_version(self, step: str, prompt: Prompt) -> str:
        if self.version_id is None:
            self.version_id = self._prompt_version(step, prompt) if self._prompt_version else self._prefix
        return self.version_id

    def attempt_started(self, record: AttemptRecord) -> str:
        self.started.append(record)
        return f"{self._prefix}-{next(self._ids)}"

    def attempt_finished(self, record: AttemptRecord) -> None:
        self.finished.append(record)


def validation_errors(exc: BaseException, raw: str | None) -> list[dict[str, Any]]:
    """Errors as ``{path, message, input}``, with JSON-path-like paths (``$.a[0].b``)."""
    if isinstance(exc, ValidationError):
        found = []
        for err in exc.errors():
            path = "$"
            for part in err["loc"]:
                path += f"[{part}]" if isinstance(part, int) else f".{part}"
            found.append({"path": path, "message": err["msg"], "input": _json_safe(err.get("input"))})
        return found
    return [{"path": "$", "message": str(exc), "input": raw}]


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


@dataclass(frozen=True)
class _StepCall(Generic[OutT]):
    """What stays the same for every request of one step execution, whichever model serves it."""

    step: Step[Any, OutT]
    messages: list[dict[str, str]]
    sampling: dict[str, Any]
    version_id: str
    sink: AttemptSink
    numbering: Iterator[int]
    """Attempt numbers run on across retries, re-asks and fallbacks."""
    max_pause_s: float
    """The longest a provider's retry-after may hold the model's other callers."""
    quota_cooldown_s: float
    """How long a model whose quota ran out stays out of service for every caller."""
    max_stored_bytes: int
    """The most of a raw response or raw output an attempt stores (``_cut_to_store``)."""
    schema: dict[str, Any]
    """The output model's JSON schema, computed once per step execution."""
    clearance: Clearance
    rendered: Rendered | None
    """The user message as sent and its masked copy, for the guard (``None`` without one)."""
    sent: list[int] = field(default_factory=lambda: [0])
    """Requests this step has sent so far, every model, retry and re-ask counted (one cell, so
    that the frozen call can still count)."""

    def requests(self) -> str:
        return f"{self.sent[0]} request(s) in this step"


class _Attempts:
    """Turns Instructor's hook events for one model call into attempt records."""

    def __init__(
        self,
        call: _StepCall[Any],
        client: ModelClient,
        route: Route,
        bodies: list[bytes],
        wait_s: float | None,
    ) -> None:
        self.call = call
        self.numbering = call.numbering
        self.max_pause_s = call.max_pause_s
        self.wait_s = wait_s
        self.step = call.step
        self.client = client
        self.route = route
        self.version_id = call.version_id
        self.sink = call.sink
        self.bodies = bodies
        self.count = 0
        self.pending: AttemptRecord | None = None
        self.last: AttemptRecord | None = None
        self._t0 = 0.0
        self._tokens = 0
        self._bodies_seen = 0
        self.sink_error: BaseException | None = None
        """A failure to record an attempt: Instructor swallows exceptions raised in
        its hooks, so it is kept here and raised once the call returns."""
        self.unsent: AttemptRecord | None = None
        """The attempt whose record failed, so it was not sent."""
        self.guard: PiiGuard | None = None
        """Set when the request goes to a non-private model for an instance with personal data."""
        self.constants: Constants | None = None
        """What every request of this step carries, whichever instance (never a finding)."""
        self.blocked: list[Leak] | None = None
        """The instance's personal values the guard found in the body as it left: not sent."""

    def _record(self, write: Callable[[AttemptRecord], object], record: AttemptRecord) -> None:
        try:
            write(record)
        except Exception as exc:
            self.sink_error = self.sink_error or exc

    def permit(self, body: bytes | None) -> None:
        """Called as a request leaves (``write_ahead``): refuse it unless its attempt is recorded,
        and, bound for a non-private model, unless its exact body is free of personal data."""
        record = self.pending
        if record is None or record.attempt_id is None:
            raise _Unrecorded("the attempt for this request was not recorded, so it is not sent")
        if self.guard is not None and self.constants is not None and body is not None:
            leaks = self.guard.leaks(
                body,
                self.constants,
                also_constant=frozenset({self.client.config.model}),
                rendered=self.call.rendered,
            )
            if leaks:
                self.blocked = leaks
                record.pii = {
                    **(record.pii or {}),
                    "blocked": [
                        {"kind": x.kind, "source": x.source, "where": x.where, "field": x.field}
                        for x in leaks
                    ],
                }
                raise _Blocked("the instance's personal data is in the request, so it is not sent")
        # The model's rate limit is taken here, as the bytes leave, not before the attempt row
        # is written: a slow write between the two would let turns taken 1/rate apart reach the
        # provider bunched together (seen: 7 requests in one second under a 5/s limit).
        waited = self.client.gate.wait_turn(self._tokens)
        if waited:
            record.wait_s = (record.wait_s or 0.0) + waited
        self._t0 = time.perf_counter()

    # Instructor hook handlers -------------------------------------------------

    def on_kwargs(self, *args: Any, **kwargs: Any) -> None:
        if self.pending is not None:  # never drop an attempt, whatever path ended it
            self.fail(RuntimeError("the attempt ended without a result"))
        self.count += 1
        chars = sum(len(str(m.get("content", ""))) for m in kwargs.get("messages") or [])
        self._tokens = chars // 3 + int(kwargs.get("max_tokens") or 0)  # the gate's estimate, at permit()
        self._t0 = time.perf_counter()
        self._bodies_seen = len(self.bodies)
        sampling: dict[str, Any] = {
            k: kwargs[k] for k in ("temperature", "top_p", "max_tokens", "seed") if k in kwargs
        }
        messages = list(kwargs.get("messages") or [])
        if kwargs.get("system"):
            messages.insert(0, {"role": "system", "content": kwargs["system"]})
        self.pending = AttemptRecord(
            step=self.step.name,
            attempt_number=next(self.numbering),  # counted as sent once it is recorded
            model_id=self.client.model_id,
            provider=self.client.provider_id,
            provider_model=self.client.config.model,
            routing_reason=self.route.reason,
            prompt_version_id=self.version_id,
            sampling=sampling,
            request_messages=_json_safe(messages),
            expected_schema=self.call.schema,
            pii={"declassified": dict(self.call.clearance.declassified)}
            if self.call.clearance.declassified
            else None,
            started_at=datetime.now(UTC),
            wait_s=(self.wait_s or None) if self.count == 1 else None,  # plus the gate's, at permit()
        )
        self._record(self._start, self.pending)

    def raise_sink_error(self, model_id: str) -> None:
        """Stop the step if an attempt could not be recorded: nothing may go unrecorded silently.

        ``Superseded`` (the instance changed hands) passes through as it is;
        any other failure of the sink fails the step as ``storage``.
        """
        error = self.sink_error
        if error is None:
            return
        if isinstance(error, Superseded):
            raise error
        reason = error.message if isinstance(error, StepLineError) else str(error).strip().splitlines()[0]
        if self.unsent is not None:
            what = f"attempt {self.unsent.attempt_number} could not be recorded, so it was not sent"
        else:
            what = "an answer was received but could not be recorded"
        raise StepFailed(
            f"step {self.step.name!r} on {model_id}: {what}: {reason}",
            step=self.step.name,
            failure=FailureClass.STORAGE,
            model_id=model_id,
        ) from error

    def _start(self, record: AttemptRecord) -> None:
        try:
            record.attempt_id = self.sink.attempt_started(record)
        except Exception:
            self.unsent = record
            raise
        self.call.sent[0] += 1

    def on_response(self, response: Any) -> None:
        record = self.pending
        if record is None:
            return
        self._stamp(record)
        vendor = self.client.vendor
        record.raw_output = vendor.output_text(response)
        record.tokens_in, record.tokens_out = vendor.usage(response)
        if record.tokens_in is not None or record.tokens_out is not None:
            record.cost_usd = self.client.config.cost(record.tokens_in or 0, record.tokens_out or 0)
        record.response_failure = vendor.response_failure(response)

    def on_parse_error(self, error: Exception, **_: Any) -> None:
        if self.pending is not None:
            self.fail(error, FailureClass.SCHEMA_INVALID)

    def on_completion_error(self, error: Exception, **_: Any) -> None:
        if self.pending is not None:
            self.fail(error, classify_exception(error))

    # Outcomes -------------------------------------------------------------------

    def _stamp(self, record: AttemptRecord) -> None:
        if record.finished_at is None:
            record.finished_at = datetime.now(UTC)
            record.latency_ms = (time.perf_counter() - self._t0) * 1000
        if len(self.bodies) > self._bodies_seen and record.raw_response is None:
            record.raw_response = self.bodies[-1].decode("utf-8", errors="replace")

    def fail(self, error: BaseException, failure: FailureClass | None = None) -> AttemptRecord:
        record = self.pending
        assert record is not None
        self.pending = None
        self._stamp(record)
        record.failure = record.response_failure or failure or classify_exception(error)
        if self.blocked is not None:
            record.failure = FailureClass.PII_BLOCKED
        record.error_message = _describe_failure(record, error)[:2000]
        if record.failure is FailureClass.SCHEMA_INVALID:
            record.validation_errors = validation_errors(_root_parse_error(error), record.raw_output)
        record.retry_after_s = retry_after_seconds(error)
        if record.attempt_id is None:  # never recorded, so never sent: nothing to complete
            record.failure = FailureClass.STORAGE
            self.last = record
            return record
        if record.retry_after_s and record.failure in (FailureClass.RATE_LIMITED, FailureClass.OVERLOADED):
            # Every caller of this model waits, but never longer than the retry policy would.
            self.client.gate.pause(min(record.retry_after_s, self.max_pause_s))
        if record.failure.behaviour.trips_model:
            when = (record.finished_at or datetime.now(UTC)).strftime("%H:%M:%S UTC")
            self.client.gate.trip(
                f"{self.client.model_id}'s quota ran out at {when}", self.call.quota_cooldown_s
            )
        _cut_to_store(record, self.call.max_stored_bytes)
        self._record(self.sink.attempt_finished, record)
        self.last = record
        return record

    def succeed(self, output: BaseModel) -> None:
        record = self.pending
        assert record is not None
        self.pending = None
        self._stamp(record)
        record.parsed_output = output.model_dump(mode="json")
        _cut_to_store(record, self.call.max_stored_bytes)
        self._record(self.sink.attempt_finished, record)
        self.last = record


def _cut_to_store(record: AttemptRecord, limit: int) -> None:
    """Cut the raw response and raw output to ``limit`` UTF-8 bytes (on a character boundary),
    and the values validation errors quote to a share of it, noting each one's size as received:
    a 30 MB answer is not stored three times per attempt."""
    for name in ("raw_response", "raw_output"):
        text: str | None = getattr(record, name)
        if text is None or len(text) * 4 <= limit:
            continue
        data = text.encode("utf-8", errors="surrogatepass")
        if len(data) <= limit:
            continue
        setattr(record, name, data[:limit].decode("utf-8", errors="ignore"))
        record.truncated = {**(record.truncated or {}), name: len(data)}
    errors = record.validation_errors
    if errors:  # each error quotes the value it refused: a 30 MB field, say
        size = len(json.dumps(errors, ensure_ascii=False).encode("utf-8", errors="surrogatepass"))
        if size > limit:
            kept = errors[:_MAX_ERRORS_KEPT]
            share = max(256, limit // (2 * len(kept)))
            record.validation_errors = [{**e, "input": _cut_value(e.get("input"), share)} for e in kept]
            record.truncated = {**(record.truncated or {}), "validation_errors": size}


_MAX_ERRORS_KEPT = 200


def _cut_value(value: Any, chars: int) -> Any:
    """``value`` if its JSON fits in ``chars``, else that JSON (or the string) cut there, with "…"."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) <= chars:
        return value
    return text[:chars] + "…"


def _describe_failure(record: AttemptRecord, error: BaseException) -> str:
    """What went wrong, in the words an operator needs: never a parse error for what was a
    refusal, a content filter or a cut-off answer (they fail to parse as a consequence)."""
    quoted = (record.raw_output or "").strip()
    if len(quoted) > 300:
        quoted = quoted[:300] + "…"
    if record.failure is FailureClass.REFUSED:
        return f"the model refused: {quoted!r}" if quoted else "the model refused, without saying why"
    if record.failure is FailureClass.CONTENT_FILTER:
        return "the provider's content filter stopped the answer (finish_reason content_filter)"
    if record.failure is FailureClass.TRUNCATED and record.response_failure is FailureClass.TRUNCATED:
        limit = record.sampling.get("max_tokens")
        at = f" of {limit} tokens" if limit else ""
        return f"the answer was cut off at the token limit{at}: {quoted!r}"
    if record.failure is FailureClass.QUOTA:
        return f"the account's quota or spend limit is used up: {error}"
    if record.failure in (FailureClass.DEADLINE, FailureClass.TOO_LARGE):
        return f"{record.provider}: {response_limit(error) or error}"
    if record.failure is FailureClass.PII_BLOCKED:
        pii = record.pii or {}
        cleared = pii.get("declassified") or {}
        found = []
        for x in pii.get("blocked", []):
            leak = Leak(x["kind"], x["source"], x["where"], x.get("field"))
            how = f" (cleared: {cleared[leak.field]})" if leak.field in cleared else ""
            found.append(leak.describe() + how)
        return (
            f"step {record.step!r}: not sent to {record.model_id}, which is not private: the request "
            f"carried this instance's personal data: {'; '.join(found)}. Text cleared for a public "
            "model held a personal value: check what cleared it, or let the step use private models "
            "only (pin one)"
        )
    return str(error)


class _Unrecorded(Exception):
    """Raised as a request would leave without its attempt recorded; the SDK turns it into a
    connection error, and the sink's own failure is what the step reports."""


class _Blocked(Exception):
    """Raised as a request would leave for a non-private model carrying the instance's personal
    data; the SDK turns it into a connection error, and the attempt says ``pii_blocked``."""


def _root_parse_error(error: BaseException) -> BaseException:
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, ValidationError | json.JSONDecodeError):
            return current
        current = current.__cause__
    return error


def _as_declared(output: BaseModel, model: type[OutT]) -> OutT:
    """The validated output as an instance of the step's own output model.

    Instructor returns an instance of a subclass it derived from the model,
    with the raw completion attached; that would make equal outputs compare
    unequal and drag whole responses into downstream steps. The values were
    validated already, so they are copied over without validating again.
    """
    fields = {name: getattr(output, name) for name in model.model_fields}
    return model.model_construct(_fields_set=output.model_fields_set, **fields)


def _reask_policy(max_reasks: int, attempts: _Attempts) -> Retrying:
    """Instructor's re-ask loop, limited to genuine schema failures.

    Instructor re-asks on any parse error, but a refusal or a content-filter
    stop also fails to parse: re-asking would launder a refusal into an
    answer, and a truncated answer only gets truncated again. The attempt
    that just ended (already classified by the hooks) decides.
    """

    def schema_failure(exc: BaseException) -> bool:
        if attempts.pending is not None:  # ended without a hook (Instructor's truncation path)
            attempts.fail(exc)
        last = attempts.last
        return last is not None and last.failure is FailureClass.SCHEMA_INVALID

    return Retrying(
        stop=stop_after_attempt(max_reasks + 1),
        retry=retry_if_exception(schema_failure),
        reraise=True,
    )


class StepExecutor:
    """Executes steps against the catalog; one per process, shared by all flows."""

    def __init__(
        self,
        settings: Settings,
        pool: ProviderPool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        latency: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool or ProviderPool(settings.providers, settings.models)
        self._sleep = sleep
        self._latency = latency
        """Observed median latency per model id (from persisted attempts), for routing."""

    def close(self) -> None:
        self.pool.close()

    def prepare(self, step: Step[Any, Any], privacy: StepPrivacy) -> None:
        """Start building the client ``step`` will most likely use first (``ProviderPool.prepare``)."""
        try:
            route = choose_route(step, self.settings, privacy=privacy)
        except StepLineError:  # the step itself will say why, with its prompt and inputs
            return
        self.pool.prepare(route.model_id)

    def run(self, step: Step[Any, OutT], inputs: BaseModel, sink: AttemptSink, clearance: Clearance) -> OutT:
        """Return the validated output, or raise ``StepFailed`` after recording every attempt.

        Transient failures are retried on the same model (``RetryPolicy``); when
        those retries run out the next model of the step's fallback chain is
        tried. Schema failures are re-asked by Instructor; refusals move on only
        where the step allows it. Only models ``clearance`` allows are offered;
        with a guard (an instance holding personal data), every request to a
        non-private model is checked as it leaves (``steps.pii``).
        """
        if not isinstance(inputs, step.input_model):
            raise DefinitionError(
                f"step {step.name!r} takes {step.input_model.__name__}, got {type(inputs).__name__}"
            )
        values = step.prompt.values(inputs)
        messages = step.prompt.messages(values)
        prompt_chars = sum(len(m["content"]) for m in messages)
        observed = self._latency() if self._latency else None
        privacy = clearance.privacy
        first = choose_route(step, self.settings, prompt_chars, observed, privacy=privacy)
        chain = fallback_chain(step, self.settings, first, prompt_chars, observed, privacy=privacy)
        call = _StepCall(
            step=step,
            messages=messages,
            sampling=step.effective_sampling.model_dump(),
            version_id=sink.prompt_version(step.name, step.prompt),
            sink=sink,
            numbering=itertools.count(1),
            max_pause_s=(step.retry or self.settings.retry).max_retry_after_s,
            quota_cooldown_s=(step.retry or self.settings.retry).quota_cooldown_s,
            max_stored_bytes=self.settings.max_stored_bytes,
            schema=step.output_schema(),
            clearance=clearance,
            rendered=Rendered.of(step.prompt.user, values, clearance.typed) if clearance.guard else None,
        )
        policy = step.retry or self.settings.retry

        def attempt_on(route: Route) -> OutT:
            return self._with_retries(call, route, policy)

        failed: StepFailed | None = None
        for route in chain:
            if failed is not None:
                route = replace(
                    route, reason=f"{route.reason}; {failed.model_id} failed with {failed.failure.value}"
                )
            try:
                return attempt_on(route)
            except StepFailed as exc:
                failed = exc
                if exc.failure is FailureClass.SCHEMA_INVALID and step.escalate_on_schema_failure:
                    better = escalation_route(
                        step, self.settings, route.model_id, prompt_chars, privacy=privacy
                    )
                    if better is None:
                        raise
                    return attempt_on(better)  # once; a second schema failure goes to review
                if not _moves_on(step, exc.failure):
                    raise
        assert failed is not None
        if len(chain) == 1:
            raise failed
        raise failed.retold(
            f"step {step.name!r}: every model in its chain failed "
            f"({', '.join(r.model_id for r in chain)}; {call.requests()}); last: {failed.message}"
        ) from failed

    def _with_retries(self, call: _StepCall[OutT], route: Route, policy: RetryPolicy) -> OutT:
        retries: Counter[FailureClass] = Counter()
        waits: list[float] = []

        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, StepFailed) or not exc.failure.behaviour.transient:
                return False
            if exc.retry_after is not None and exc.retry_after > policy.max_retry_after_s:
                return False  # asked to wait longer than we will: move on instead
            if not policy.allows(exc.failure, retries[exc.failure]):
                return False
            retries[exc.failure] += 1
            return True

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            assert isinstance(exc, StepFailed)
            return policy.delay(retries[exc.failure], exc.retry_after)

        for attempt in Retrying(
            retry=retry_if_exception(retryable),
            wait=wait,
            sleep=self._sleep,
            before_sleep=lambda state: waits.append(state.upcoming_sleep),
            reraise=True,
        ):
            with attempt:
                wait_s = waits[-1] if waits else None
                return self._call(call, route, wait_s)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _call(self, call: _StepCall[OutT], route: Route, wait_s: float | None) -> OutT:
        """One Instructor call on one model (its re-asks included)."""
        from instructor.core.hooks import Hooks

        step = call.step
        client = self.pool.get(route.model_id)
        out_of_service = client.gate.tripped()
        if out_of_service is not None:  # a spent quota: every caller would fail the same way
            raise StepFailed(
                f"step {step.name!r}: not sent to {route.model_id}: {out_of_service} ({call.requests()})",
                step=step.name,
                failure=FailureClass.QUOTA,
                model_id=route.model_id,
            )
        messages: list[dict[str, Any]] = list(call.messages)
        with client.gate.slot(), capture_bodies() as bodies:
            attempts = _Attempts(call, client, route, bodies, wait_s)
            guard = call.clearance.guard
            if guard is not None and not client.provider.private:
                attempts.guard = guard
                attempts.constants = Constants.of(
                    step.prompt, step.output_model, call.clearance.privacy.options
                )
            hooks = Hooks()
            hooks.on("completion:kwargs", attempts.on_kwargs)
            hooks.on("completion:response", attempts.on_response)
            hooks.on("parse:error", attempts.on_parse_error)
            hooks.on("completion:error", attempts.on_completion_error)
            try:
                with write_ahead(attempts.permit):
                    output = client.client.create(
                        messages=messages,  # type: ignore[arg-type]
                        response_model=step.output_model,
                        max_retries=_reask_policy(step.max_reasks, attempts),
                        hooks=hooks,
                        **client.request_kwargs(call.sampling, call.schema),
                    )
            except Exception as exc:
                if attempts.pending is not None:
                    attempts.fail(exc)
                attempts.raise_sink_error(route.model_id)
                last = attempts.last
                failure = last.failure if last and last.failure else classify_exception(exc)
                detail = (last.error_message if last and last.error_message else str(exc))[:300]
                raise StepFailed(
                    f"step {step.name!r} failed on {route.model_id} ({call.requests()}): "
                    f"{failure.value}: {detail}",
                    step=step.name,
                    failure=failure,
                    attempt_id=last.attempt_id if last else None,
                    raw_output=last.raw_output if last else None,
                    model_id=route.model_id,
                    retry_after=last.retry_after_s if last else retry_after_seconds(exc),
                ) from exc
            attempts.succeed(output)
            attempts.raise_sink_error(route.model_id)
        return _as_declared(output, step.output_model)


def _moves_on(step: Step[Any, Any], failure: FailureClass) -> bool:
    """Whether a failure, once retries on a model are spent, may try the next model."""
    fallback = failure.behaviour.fallback
    return fallback is Fallback.ALWAYS or (fallback is Fallback.IF_STEP_ALLOWS and step.fallback_on_refusal)
