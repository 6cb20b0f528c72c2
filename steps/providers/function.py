"""A model that is a Python function, for tests: the step executor's whole path with no HTTP.

Like pydantic-ai's ``FunctionModel``: the function receives the request as Instructor built it
(messages, the structured mode, the output schema, the sampling) and returns the answer, or
raises ``ModelFailure`` to fail the request the way a provider would (rate limited with a
retry-after, unavailable, timeout...). Its answer becomes an OpenAI ``ChatCompletion``, so that
Instructor parses, validates and re-asks exactly as it does for a real model, and routing,
retries, fallbacks, escalation, the pii guard and every attempt record run unchanged::

    def model(request: FunctionRequest) -> Answer:
        if not calls:
            calls.append(request)
            raise ModelFailure(FailureClass.RATE_LIMITED, retry_after=0.01)
        return {"label": "spam"}

    ProviderConfig(kind=ProviderKind.FUNCTION)
    ModelConfig(provider="fn", model="scripted", function=model)

A function model is set in code only: its ``ModelConfig.function`` is a Python callable, which a
catalog file cannot hold, so ``kind = "function"`` in a TOML catalog is refused at load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from steps.errors import ConfigError, FailureClass
from steps.providers import openai as openai_vendor
from steps.providers.base import FailureRow, check_write_ahead, record_body, sampling_kwargs
from steps.settings import ModelConfig, ProviderConfig, ProviderKind, StructuredMode

if TYPE_CHECKING:
    import instructor
    from openai.types.chat import ChatCompletion

__all__ = ["VENDOR", "Answer", "FunctionModel", "FunctionRequest", "FunctionVendor", "ModelFailure", "Reply"]


@dataclass(frozen=True)
class FunctionRequest:
    """One request, as a provider would receive it."""

    model: str
    """The catalog model's ``model`` name."""
    messages: list[dict[str, Any]]
    """As sent, a re-ask's feedback included (redacted for a non-private model)."""
    mode: StructuredMode
    schema: dict[str, Any] | None
    """The JSON schema the answer must match, as the tool's parameters or the ``response_format``
    carry it; None in ``json`` mode, where it is in the messages."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """The sampling values sent (temperature, top_p, max_tokens, seed), those that are set."""


@dataclass(frozen=True)
class Reply:
    """An answer with the response fields a provider may set: what a refusal or a cut-off looks like."""

    text: str | None = None
    """The raw answer (tool-call arguments in ``tools`` mode, the content otherwise)."""
    refusal: str | None = None
    """The model declined: OpenAI's ``message.refusal``."""
    finish_reason: str = "stop"
    """``length`` for an answer cut off at max_tokens, ``content_filter`` for a filtered one."""


Answer = BaseModel | dict[str, Any] | str | Reply
"""A model or a dict (sent as JSON), raw text (sent as it is, valid JSON or not), or a ``Reply``."""

FunctionModel = Callable[[FunctionRequest], Answer]
"""What a function model is: it answers a request, or raises ``ModelFailure``."""


class ModelFailure(Exception):
    """Raised by a function model to fail the request as a provider would; it names its class,
    so ``steps.classify`` needs no row for it (as for ``StepFailed``)."""

    def __init__(self, failure: FailureClass, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message or f"the function model failed: {failure.value}")
        self.failure = failure
        self.message = message
        self.retry_after = retry_after
        """Seconds the provider asked to wait (a 429's or 529's retry-after)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.failure, self.message, self.retry_after))


def _rebuild(failure: FailureClass, message: str, retry_after: float | None) -> ModelFailure:
    return ModelFailure(failure, message, retry_after=retry_after)


class FunctionVendor(openai_vendor.OpenAIShaped):
    """Function models: Instructor's OpenAI modes over a ``create`` that calls the function."""

    kind: ClassVar[ProviderKind] = ProviderKind.FUNCTION
    failures: ClassVar[tuple[FailureRow, ...]] = ()
    error_types: ClassVar[Mapping[str, FailureClass]] = {}
    sdk_modules: ClassVar[tuple[str, ...]] = ()

    def modes(self) -> Mapping[StructuredMode, instructor.Mode]:
        return openai_vendor.openai_modes()

    def build(
        self, config: ModelConfig, provider: ProviderConfig, closers: list[Callable[[], None]]
    ) -> instructor.Instructor:
        import instructor

        if config.function is None:
            raise ConfigError(f"function model {config.model!r} has no function (ModelConfig(function=...))")
        mode = self.modes()[config.structured_mode]
        create = _function_create(config, config.function)
        return instructor.Instructor(
            client=None, create=instructor.patch(create=create, mode=mode), mode=mode
        )


def _function_create(config: ModelConfig, function: Callable[[FunctionRequest], Any]) -> Callable[..., Any]:
    """An OpenAI-shaped ``create`` that asks ``function``; the request's JSON is what the write-ahead
    check (and the pii guard) reads, as it would an HTTP body."""

    def create(**kwargs: Any) -> ChatCompletion:
        check_write_ahead(json.dumps(kwargs, ensure_ascii=False, default=str).encode())
        request = FunctionRequest(
            model=str(kwargs.get("model", config.model)),
            messages=list(kwargs.get("messages") or []),
            mode=config.structured_mode,
            schema=_schema_of(kwargs),
            sampling=sampling_kwargs(kwargs),
        )
        completion = _completion(function(request), kwargs, request.model)
        record_body(completion.model_dump_json(exclude_unset=True).encode())
        return completion

    return create


def _schema_of(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    tools = kwargs.get("tools")
    if tools:
        return dict(tools[0]["function"]["parameters"])
    response_format = kwargs.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return dict(response_format["json_schema"]["schema"])
    return None


def _completion(answer: Any, kwargs: Mapping[str, Any], model: str) -> ChatCompletion:
    """The answer as the chat completion an OpenAI server would send."""
    from openai.types.chat import ChatCompletion

    if isinstance(answer, Reply):
        reply = answer
    elif isinstance(answer, BaseModel):
        reply = Reply(text=answer.model_dump_json())
    elif isinstance(answer, dict):
        reply = Reply(text=json.dumps(answer, ensure_ascii=False))
    elif isinstance(answer, str):
        reply = Reply(text=answer)
    else:
        raise TypeError(
            f"a function model returns a model, a dict, a str or a Reply, not {type(answer).__name__}"
        )
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": reply.refusal}
    tools = kwargs.get("tools")
    if reply.text is not None and tools:
        name = tools[0]["function"]["name"]
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": reply.text}}
        message["tool_calls"] = [call]
    elif reply.text is not None:
        message["content"] = reply.text
    return ChatCompletion.model_validate(
        {
            "id": "function-model",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason, "message": message}],
        }
    )


VENDOR = FunctionVendor()
