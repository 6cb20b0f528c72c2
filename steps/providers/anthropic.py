"""Anthropic's Messages API (SDK 2.x), imported only when a client is built or a schema converted."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from steps.errors import FailureClass
from steps.providers.base import FailureRow, http_client_options
from steps.settings import ModelConfig, ProviderConfig, ProviderKind, StructuredMode

if TYPE_CHECKING:
    import instructor

__all__ = ["ERROR_TYPES", "FAILURES", "VENDOR", "AnthropicVendor", "anthropic_output_schema"]

_F = FailureClass

FAILURES: tuple[FailureRow, ...] = (
    ("anthropic", "APITimeoutError", _F.TIMEOUT),
    ("anthropic", "APIConnectionError", _F.CONNECTION),
    ("anthropic", "APIResponseValidationError", _F.SCHEMA_INVALID),
    ("anthropic", "CredentialsError", _F.AUTH),
    ("anthropic", "WorkloadIdentityError", _F.AUTH),
    ("anthropic", "RetryableError", _F.UNAVAILABLE),
)
"""The anthropic SDK's exceptions other than status errors (classified by status and body)."""

ERROR_TYPES: Mapping[str, FailureClass] = {
    "overloaded_error": _F.OVERLOADED,
    "rate_limit_error": _F.RATE_LIMITED,
    "authentication_error": _F.AUTH,
    "permission_error": _F.AUTH,
    "invalid_request_error": _F.BAD_REQUEST,
    "not_found_error": _F.BAD_REQUEST,
    "request_too_large": _F.BAD_REQUEST,
    "api_error": _F.UNAVAILABLE,
}
"""Anthropic names the error in the body; an overloaded_error may come as 529 or 503."""


class AnthropicVendor:
    """The anthropic SDK's client; native structured output through ``output_config``."""

    kind: ClassVar[ProviderKind] = ProviderKind.ANTHROPIC
    failures: ClassVar[tuple[FailureRow, ...]] = FAILURES
    error_types: ClassVar[Mapping[str, FailureClass]] = ERROR_TYPES
    sdk_modules: ClassVar[tuple[str, ...]] = ("anthropic",)

    def modes(self) -> Mapping[StructuredMode, instructor.Mode]:
        from instructor import Mode

        return {
            StructuredMode.TOOLS: Mode.ANTHROPIC_TOOLS,
            # Not Mode.JSON_SCHEMA: Instructor's handler for it sends the beta `output_format`, gone
            # from SDK 2.x. ANTHROPIC_JSON parses the text answer; `output_config` is added by
            # request_kwargs.
            StructuredMode.JSON_SCHEMA: Mode.ANTHROPIC_JSON,
            StructuredMode.JSON: Mode.ANTHROPIC_JSON,
        }

    def build(
        self, config: ModelConfig, provider: ProviderConfig, closers: list[Callable[[], None]]
    ) -> instructor.Instructor:
        import anthropic
        import instructor

        sdk = anthropic.Anthropic(
            api_key=provider.api_key() or "unused",
            base_url=provider.base_url,
            max_retries=0,
            timeout=provider.timeout_s,
            http_client=anthropic.DefaultHttpxClient(**http_client_options(provider)),
        )
        closers.append(sdk.close)
        return instructor.from_anthropic(sdk, mode=self.modes()[config.structured_mode])

    def request_kwargs(
        self, config: ModelConfig, sampling: Mapping[str, Any], schema: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Only max_tokens (required) of the sampling values, and ``output_config`` in json_schema mode.

        Anthropic's Messages API (SDK 2.x) takes no temperature, top_p or seed; each attempt
        records the values actually sent, so the difference is visible, not hidden.

        In ``json_schema`` mode, ``output_config.format`` is built from ``schema`` (the output
        model's JSON schema) here, because Instructor 1.17 cannot send it: its Anthropic
        JSON_SCHEMA handler sends the beta ``output_format`` argument, which SDK 2.x's
        ``messages.create()`` no longer has, so it warns and falls back to instructions in the
        prompt. The client runs Instructor's ``ANTHROPIC_JSON`` mode instead (``modes``), which
        reads the JSON from the text block the constrained answer arrives in, and re-asks with it;
        it also puts the schema in the system prompt, redundant under constrained decoding but
        harmless, and kept rather than a handler of our own.
        """
        kwargs: dict[str, Any] = {"model": config.model, "max_tokens": sampling.get("max_tokens") or 1024}
        if config.structured_mode is StructuredMode.JSON_SCHEMA and schema is not None:
            kwargs["output_config"] = {
                "format": {"type": "json_schema", "schema": anthropic_output_schema(schema)}
            }
        return kwargs

    def output_text(self, response: Any) -> str | None:
        """The content blocks in order: a tool call's input as JSON, a text block as it is."""
        content = getattr(response, "content", None)
        if not isinstance(content, list):
            return None
        parts = []
        for block in content:
            if getattr(block, "type", None) == "tool_use":
                parts.append(json.dumps(block.input, ensure_ascii=False))
            elif getattr(block, "type", None) == "text":
                parts.append(block.text)
        return "".join(parts)

    def usage(self, response: Any) -> tuple[int | None, int | None]:
        found = getattr(response, "usage", None)
        if found is None:
            return None, None
        return getattr(found, "input_tokens", None), getattr(found, "output_tokens", None)

    def response_failure(self, response: Any) -> FailureClass | None:
        """``stop_reason`` refusal -> refused, max_tokens -> truncated."""
        stop_reason = getattr(response, "stop_reason", None)
        if stop_reason == "refusal":
            return _F.REFUSED
        if stop_reason == "max_tokens":
            return _F.TRUNCATED
        return None


def anthropic_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` in the subset Anthropic's ``output_config.format`` accepts.

    The API compiles the schema into a grammar and refuses what the grammar cannot express:
    every object needs ``additionalProperties: false``, and numeric bounds, string lengths,
    ``maxItems``, a ``minItems`` other than 0 or 1 and string formats outside a short list are
    rejected. The SDK's own ``transform_schema`` makes exactly these changes (dropped keywords
    move into the description, as hints); Pydantic still validates the answer against the full
    schema.

    Transformed once per schema object (a step passes the same one, ``Step.output_schema``), not
    on every request. Shared: callers read it and must not change it.
    """
    known = _TRANSFORMED.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    import anthropic

    transformed: dict[str, Any] = anthropic.transform_schema(schema)
    _TRANSFORMED[id(schema)] = (schema, transformed)  # holding the schema keeps its id from being reused
    return transformed


_TRANSFORMED: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}


VENDOR = AnthropicVendor()
