"""The step runtime's errors, and ``FailureClass``: why a step failed, with what that implies.

This is the ``steps`` branch of the one error tree drawn in ``stepline.errors``:

    StepLineError (stepline.errors)
    ├── ConfigError ........... the catalog or settings file is wrong (an operator fix)
    ├── DefinitionError ....... a step or workflow is declared wrongly (a developer fix)
    ├── InputError ............ an input, id or option cannot be used as given
    ├── StepFailed ............ a step ran and did not produce a valid output;
    │                           ``failure`` says why, as a ``FailureClass``
    └── Superseded ............ this process no longer holds the instance (it was judged
                                dead and the instance handed on): stop, write nothing more

A step failure is never a subclass per cause: callers branch on
``StepFailed.failure`` (an enum stored on every failed attempt), and what each
class implies (retried? tried on the next model? a person's review? the
owner told? resumed by ``stepline recover``?) is data on the class itself
(``FailureClass.behaviour``), read by every place that decides. The mapping
from SDK exceptions and response fields to a class lives in ``steps.classify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from stepline.errors import StepLineError

__all__ = [
    "Behaviour",
    "ConfigError",
    "DefinitionError",
    "FailureClass",
    "Fallback",
    "InputError",
    "StepFailed",
    "StepLineError",
    "Superseded",
    "describe_json_error",
    "describe_validation_error",
]


class Fallback(Enum):
    """Whether a failure, once a model's own retries are spent, tries the step's next model."""

    ALWAYS = "always"
    IF_STEP_ALLOWS = "if_step_allows"
    """Only with ``Step(fallback_on_refusal=True)``: another model may answer what one refused."""
    NEVER = "never"


@dataclass(frozen=True)
class Behaviour:
    """What a failure class implies for the step, the instance and the people around it."""

    transient: bool = False
    """Retried on the same model after a wait (``RetryPolicy``), honouring retry-after."""
    fallback: Fallback = Fallback.NEVER
    """Whether the next model of the step's chain is tried after this one."""
    review: bool = False
    """About the output itself: the instance waits for a person (needs_review), never advances."""
    notifies: bool = True
    """The owner is told when an instance stops with it."""
    infrastructure: bool = False
    """What runs the step failed (its process, the database, Prefect's API), not the step or its
    model: ``stepline recover --replay`` resumes it once that is back."""
    trips_model: bool = False
    """The model is taken out of service for every caller in this process (a spent quota)."""
    action: str = "fix the cause, then `stepline replay <id>`"
    """What an operator does about it, for messages, notifications and the TUI."""


class FailureClass(StrEnum):
    """Why one attempt at a step failed; stored on every failed attempt."""

    RATE_LIMITED = "rate_limited"
    """HTTP 429: the provider asked us to slow down (may carry retry-after)."""
    OVERLOADED = "overloaded"
    """HTTP 529 / overloaded_error: the provider is up but shedding load."""
    UNAVAILABLE = "unavailable"
    """HTTP 5xx: the provider or model is down."""
    TIMEOUT = "timeout"
    """No complete response within the client's timeout."""
    CONNECTION = "connection"
    """The connection failed or was reset before a response arrived."""
    DEADLINE = "deadline"
    """The response did not arrive whole within the provider's ``deadline_s``, however its bytes
    trickled in (a stalled or hostile peer); tried on the next model, not again on this one."""
    TOO_LARGE = "too_large"
    """The response body passed the provider's ``max_response_bytes`` (decompressed): reading
    stopped there; tried on the next model, not again on this one."""
    QUOTA = "quota"
    """The account's quota, credit or spend limit is used up: waiting will not help."""
    SCHEMA_INVALID = "schema_invalid"
    """The model answered, but not with JSON matching the output model."""
    TRUNCATED = "truncated"
    """The model stopped at its token limit (finish_reason length / max_tokens)."""
    REFUSED = "refused"
    """The model declined to answer (a refusal field, stop_reason refusal)."""
    CONTENT_FILTER = "content_filter"
    """The provider's content filter stopped the answer (finish_reason content_filter)."""
    PII_BLOCKED = "pii_blocked"
    """Personal data could not be kept out of a request to a non-private model: not sent."""
    AUTH = "auth"
    """HTTP 401/403 or a missing API key."""
    BAD_REQUEST = "bad_request"
    """HTTP 400/404/422 or a request the model cannot serve (e.g. unsupported mode)."""
    INTERRUPTED = "interrupted"
    """The operator stopped the process (Ctrl-C) before the step ran; a replay resumes it."""
    ORCHESTRATOR = "orchestrator"
    """Prefect's API failed (unreachable, or 5xx after its client's retries); a replay resumes it."""
    WORKER_LOST = "worker_lost"
    """The process running the instance died (killed, crashed, machine lost); a replay resumes it."""
    STORAGE = "storage"
    """The database could not record the step's progress (connection lost past its retries,
    read-only, disk full): the request is not sent unrecorded; a replay resumes it."""
    SUPERSEDED = "superseded"
    """On an attempt only: a stale worker's request answered after its instance changed hands,
    kept for audit and never applied."""
    UNKNOWN = "unknown"
    """Anything not mapped above; kept so that no failure is ever dropped."""

    @property
    def behaviour(self) -> Behaviour:
        return _BEHAVIOUR[self]


_TRANSIENT = Behaviour(
    transient=True,
    fallback=Fallback.ALWAYS,
    action="nothing if it passes; else wait or add a fallback model, then `stepline replay <id>`",
)
_OUTPUT = "correct or reject the output: `stepline review approve <id> --output <file>` (or the TUI)"
_RESUME = "`stepline recover --replay` (or `stepline replay <id>`) once it is back"
_BEHAVIOUR: dict[FailureClass, Behaviour] = {
    FailureClass.RATE_LIMITED: _TRANSIENT,
    FailureClass.OVERLOADED: _TRANSIENT,
    FailureClass.UNAVAILABLE: _TRANSIENT,
    FailureClass.TIMEOUT: _TRANSIENT,
    FailureClass.CONNECTION: _TRANSIENT,
    FailureClass.DEADLINE: Behaviour(
        fallback=Fallback.ALWAYS,
        action="check the provider (it answered too slowly), or raise its deadline_s in the catalog; "
        "then `stepline replay <id>`",
    ),
    FailureClass.TOO_LARGE: Behaviour(
        fallback=Fallback.ALWAYS,
        action="check the provider (its answer was far larger than any answer should be), or raise "
        "its max_response_bytes in the catalog; then `stepline replay <id>`",
    ),
    FailureClass.QUOTA: Behaviour(
        fallback=Fallback.ALWAYS,
        trips_model=True,
        action="raise the account's spend limit or add credit, then `stepline replay <id>`",
    ),
    FailureClass.SCHEMA_INVALID: Behaviour(review=True, action=_OUTPUT),
    FailureClass.TRUNCATED: Behaviour(review=True, action=_OUTPUT + "; or raise max_tokens and replay"),
    FailureClass.REFUSED: Behaviour(fallback=Fallback.IF_STEP_ALLOWS, review=True, action=_OUTPUT),
    FailureClass.CONTENT_FILTER: Behaviour(fallback=Fallback.IF_STEP_ALLOWS, review=True, action=_OUTPUT),
    FailureClass.PII_BLOCKED: Behaviour(
        fallback=Fallback.ALWAYS,
        action="route the step to a private model or remove the personal data from its prompt, "
        "then `stepline replay <id>`",
    ),
    FailureClass.AUTH: Behaviour(action="fix the API key in the environment, then `stepline replay <id>`"),
    FailureClass.BAD_REQUEST: Behaviour(action="fix the catalog or the prompt, then `stepline replay <id>`"),
    FailureClass.INTERRUPTED: Behaviour(notifies=False, action="`stepline replay <id>` resumes it"),
    FailureClass.ORCHESTRATOR: Behaviour(infrastructure=True, action=_RESUME),
    FailureClass.WORKER_LOST: Behaviour(infrastructure=True, action=_RESUME),
    FailureClass.STORAGE: Behaviour(infrastructure=True, action=_RESUME),
    FailureClass.SUPERSEDED: Behaviour(notifies=False, action="nothing: kept for audit"),
    FailureClass.UNKNOWN: Behaviour(),
}


def describe_validation_error(exc: Any) -> str:
    """A pydantic ValidationError as ``field.path: message; ...`` for one-line error messages."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
    )


def describe_json_error(exc: Any) -> str:
    """A ``json.JSONDecodeError`` as ``<what> at line L column C`` for one-line messages."""
    # Some of json's messages already end in " at" ("Invalid control character at").
    return f"{exc.msg.removesuffix(' at')} at line {exc.lineno} column {exc.colno}"


class ConfigError(StepLineError):
    """The catalog or settings are invalid; the message names the file, key and fix."""


class DefinitionError(StepLineError):
    """A step or workflow definition is inconsistent (raised at import/registration)."""


class InputError(StepLineError):
    """An input, id or option cannot be used as given (not JSON, wrong shape, past a limit)."""


class Superseded(StepLineError):
    """This process's lease on an instance is gone: another worker or a replay holds it now.

    Raised before the next request would be sent, or when a write is refused;
    the step and the flow stop without writing anything more for the instance.
    """


class StepFailed(StepLineError):
    """A step ended without a valid output.

    ``raw_output`` keeps the model's text exactly as received (``None`` when
    no response arrived), so an operator can compare it with the schema;
    ``attempt_id`` names the attempt row that ended it, when one was recorded.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str,
        failure: FailureClass,
        attempt_id: str | None = None,
        raw_output: str | None = None,
        model_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.failure = failure
        self.attempt_id = attempt_id
        self.raw_output = raw_output
        self.model_id = model_id
        self.retry_after = retry_after

    def retold(self, message: str, *, with_output: bool = True) -> StepFailed:
        """The same failure in other words: a fallback chain's summary, or (``with_output``
        off) the stand-in Prefect is shown for an instance holding personal data."""
        return StepFailed(
            message,
            step=self.step,
            failure=self.failure,
            attempt_id=self.attempt_id,
            raw_output=self.raw_output if with_output else None,
            model_id=self.model_id,
            retry_after=self.retry_after,
        )
