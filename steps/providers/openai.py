"""OpenAI's chat-completions API (api.openai.com, or any server speaking it at ``base_url``).

Its response readers are also the embedded and function models' (both answer with an OpenAI
``ChatCompletion``). The ``openai`` SDK and Instructor are imported only when a client is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from steps.errors import FailureClass
from steps.providers.base import FailureRow, http_client_options, sampling_kwargs
from steps.settings import ModelConfig, ProviderConfig, ProviderKind, StructuredMode

if TYPE_CHECKING:
    import instructor

__all__ = ["FAILURES", "VENDOR", "OpenAIShaped", "OpenAIVendor", "output_text", "response_failure", "usage"]

_F = FailureClass

FAILURES: tuple[FailureRow, ...] = (
    ("openai", "APITimeoutError", _F.TIMEOUT),
    ("openai", "APIConnectionError", _F.CONNECTION),
    ("openai", "ContentFilterFinishReasonError", _F.CONTENT_FILTER),
    ("openai", "LengthFinishReasonError", _F.TRUNCATED),
    ("openai", "APIResponseValidationError", _F.SCHEMA_INVALID),
)
"""The openai SDK's exceptions other than status errors (classified by status and body)."""


def openai_modes() -> dict[StructuredMode, instructor.Mode]:
    """Instructor's modes for an OpenAI-shaped ``create``."""
    from instructor import Mode

    return {
        StructuredMode.TOOLS: Mode.TOOLS,
        StructuredMode.JSON_SCHEMA: Mode.JSON_SCHEMA,
        StructuredMode.JSON: Mode.JSON,
    }


def output_text(response: Any) -> str | None:
    """A chat completion's answer: the tool call's arguments, else the content, else the refusal."""
    choices = getattr(response, "choices", None)
    if not choices:
        return None
    message = choices[0].message
    if message.tool_calls:
        return str(message.tool_calls[0].function.arguments)
    if message.content is not None:
        return str(message.content)
    return str(message.refusal) if message.refusal else None


def usage(response: Any) -> tuple[int | None, int | None]:
    """``usage.prompt_tokens`` and ``usage.completion_tokens``."""
    found = getattr(response, "usage", None)
    if found is None:
        return None, None
    return getattr(found, "prompt_tokens", None), getattr(found, "completion_tokens", None)


def response_failure(response: Any) -> FailureClass | None:
    """``finish_reason`` content_filter -> content_filter, ``message.refusal`` -> refused,
    ``finish_reason`` length -> truncated."""
    choices = getattr(response, "choices", None)
    if not choices:
        return None
    choice = choices[0]
    if choice.finish_reason == "content_filter":
        return _F.CONTENT_FILTER
    if getattr(choice.message, "refusal", None):
        return _F.REFUSED
    if choice.finish_reason == "length":
        return _F.TRUNCATED
    return None


class OpenAIShaped:
    """What every vendor whose answers are OpenAI chat completions shares: the sampling values
    sent as they are, and the readers of the completion (the embedded and function vendors too)."""

    def request_kwargs(
        self, config: ModelConfig, sampling: Mapping[str, Any], schema: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {"model": config.model, **sampling_kwargs(sampling)}

    def output_text(self, response: Any) -> str | None:
        return output_text(response)

    def usage(self, response: Any) -> tuple[int | None, int | None]:
        return usage(response)

    def response_failure(self, response: Any) -> FailureClass | None:
        return response_failure(response)


class OpenAIVendor(OpenAIShaped):
    """The openai SDK's client, Instructor's OpenAI modes, the sampling values sent as they are."""

    kind: ClassVar[ProviderKind] = ProviderKind.OPENAI
    failures: ClassVar[tuple[FailureRow, ...]] = FAILURES
    error_types: ClassVar[Mapping[str, FailureClass]] = {}
    sdk_modules: ClassVar[tuple[str, ...]] = ("openai",)

    def modes(self) -> Mapping[StructuredMode, instructor.Mode]:
        return openai_modes()

    def build(
        self, config: ModelConfig, provider: ProviderConfig, closers: list[Callable[[], None]]
    ) -> instructor.Instructor:
        import instructor
        import openai

        sdk = openai.OpenAI(
            api_key=provider.api_key() or "unused",
            base_url=provider.base_url,
            max_retries=0,
            timeout=provider.timeout_s,
            http_client=openai.DefaultHttpxClient(**http_client_options(provider)),
        )
        closers.append(sdk.close)
        return instructor.from_openai(sdk, mode=self.modes()[config.structured_mode])


VENDOR = OpenAIVendor()
