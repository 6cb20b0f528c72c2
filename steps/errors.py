"""Stepline's errors: one tree, with the failure class carried as data.

    StepLineError
    ├── ConfigError ........... the catalog or settings file is wrong (an operator fix)
    ├── DefinitionError ....... a step or workflow is declared wrongly (a developer fix)
    ├── InputError ............ a workflow's input does not match its input model
    ├── StepFailed ............ a step ran and did not produce a valid output;
    │                           ``failure`` says why, as a ``FailureClass``
    └── Superseded ............ this process no longer holds the instance (it was judged
                                dead and the instance handed on): stop, write nothing more

A step failure is never a subclass per cause: callers branch on
``StepFailed.failure`` (an enum stored on every failed attempt), so the
taxonomy lives in exactly one place, ``FailureClass``, and the mapping from
SDK exceptions and response fields to it lives in ``steps.classify``.

Errors define ``__reduce__`` so they survive pickling: Prefect may move an
exception between threads or processes, and keyword-only constructors do not
round-trip through the default pickle protocol.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "INFRASTRUCTURE_FAILURES",
    "TRANSIENT_FAILURES",
    "ConfigError",
    "DefinitionError",
    "FailureClass",
    "InputError",
    "StepFailed",
    "StepLineError",
    "Superseded",
    "describe_json_error",
    "describe_validation_error",
]


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
    SCHEMA_INVALID = "schema_invalid"
    """The model answered, but not with JSON matching the output model."""
    TRUNCATED = "truncated"
    """The model stopped at its token limit (finish_reason length / max_tokens)."""
    REFUSED = "refused"
    """The model refused, or a content filter blocked the answer."""
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


TRANSIENT_FAILURES: frozenset[FailureClass] = frozenset(
    {
        FailureClass.RATE_LIMITED,
        FailureClass.OVERLOADED,
        FailureClass.UNAVAILABLE,
        FailureClass.TIMEOUT,
        FailureClass.CONNECTION,
    }
)
"""Failures worth retrying on the same model after a wait."""

INFRASTRUCTURE_FAILURES: frozenset[FailureClass] = frozenset(
    {FailureClass.WORKER_LOST, FailureClass.STORAGE, FailureClass.ORCHESTRATOR}
)
"""Stops caused by what runs the step (its process, the database, Prefect's API), not by the step
or its model: ``stepline recover --replay`` resumes them once that is back."""


class StepLineError(Exception):
    """Base of every error Stepline raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[StepLineError], state: dict[str, Any]) -> StepLineError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


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
    """A workflow input is not valid JSON or does not match the input model."""


class Superseded(StepLineError):
    """This process's lease on an instance is gone: another worker or a replay holds it now.

    Raised before the next request would be sent, or when a write is refused;
    the step and the flow stop without writing anything more for the instance.
    """


class StepFailed(StepLineError):
    """A step ended without a valid output.

    ``raw_output`` keeps the model's text exactly as received (``None`` when
    no response arrived), so an operator can compare it with the schema.
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
