"""A fake Anthropic Messages endpoint (``POST /v1/messages``).

The anthropic SDK's ``base_url`` is the bare origin (it appends
``/v1/messages`` itself), so ``base_url`` here has no path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from .base import FakeLLMServer, Reply, Usage, random_id

__all__ = ["AnthropicServer"]

_ERROR_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    408: ("timeout_error", "Request timed out."),
    409: ("conflict_error", "Conflict."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Gateway timeout"),
    529: ("overloaded_error", "Overloaded"),
}


class AnthropicServer(FakeLLMServer):
    """Speaks the Messages wire format the ``anthropic`` SDK parses.

    Where the answer goes:

    * request has client ``tools`` (ones with ``input_schema``) and
      ``tool_choice`` is not ``{"type": "none"}``: a ``tool_use`` block for the
      tool named by ``tool_choice`` (else the first tool), stop_reason
      ``tool_use``.  ``tool_use.input`` is an object on the wire, so the reply
      text is parsed; text that is not a JSON object cannot be a tool call and
      goes out as a ``text`` block with stop_reason ``end_turn`` instead (this
      is also what ``invalid_json`` always does: a model that "fails to call
      the tool" and writes prose);
    * no tools: a single ``text`` block holding the reply text.

    ``truncated`` is a text block with stop_reason ``max_tokens`` (a cut-off
    tool call has no valid object to put in ``input``).  ``refusal`` (and
    ``content_filter``, which Anthropic lacks) is stop_reason ``refusal`` with
    no content blocks and the text in ``stop_details.explanation``.
    """

    vendor: ClassVar[str] = "anthropic"
    base_path: ClassVar[str] = ""
    endpoint: ClassVar[str] = "/v1/messages"
    default_model: ClassVar[str] = "claude-sonnet-4-6"

    def validate(self, body: dict[str, Any]) -> tuple[str, str | None] | None:
        if body.get("stream"):
            return ("stream: streaming is not supported by this test server", "stream")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return ("model: Field required", "model")
        if not isinstance(body.get("max_tokens"), int):
            return ("max_tokens: Field required", "max_tokens")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return ("messages: at least one message is required", "messages")
        return None

    @staticmethod
    def selected_tool(body: Mapping[str, Any]) -> str | None:
        """Name of the client tool the model would call, or None."""
        tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping) and "input_schema" in t]
        choice = body.get("tool_choice")
        if not tools or (isinstance(choice, Mapping) and choice.get("type") == "none"):
            return None
        if (
            isinstance(choice, Mapping)
            and choice.get("type") == "tool"
            and isinstance(choice.get("name"), str)
        ):
            return str(choice["name"])
        return str(tools[0]["name"])

    def requested_schema(self, body: dict[str, Any]) -> Mapping[str, Any] | None:
        name = self.selected_tool(body)
        if name is not None:
            for tool in body.get("tools") or []:
                if tool.get("name") == name and isinstance(tool.get("input_schema"), Mapping):
                    schema: Mapping[str, Any] = tool["input_schema"]
                    return schema
        output_config = body.get("output_config")
        fmt = output_config.get("format") if isinstance(output_config, Mapping) else None
        if fmt is None:
            fmt = body.get("output_format")  # the older beta spelling
        if isinstance(fmt, Mapping) and isinstance(fmt.get("schema"), Mapping):
            found: Mapping[str, Any] = fmt["schema"]
            return found
        return None

    def render(self, reply: Reply, body: dict[str, Any], usage: Usage) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        stop_details: dict[str, Any] | None = None
        tool = self.selected_tool(body)
        if reply.kind in ("refusal", "content_filter"):
            stop_reason = "refusal"
            stop_details = {"type": "refusal", "category": None, "explanation": reply.text or None}
        elif reply.kind == "truncated":
            content.append({"type": "text", "text": reply.text})
            stop_reason = "max_tokens"
        else:
            tool_input = _as_object(reply.text) if tool is not None and reply.kind == "ok" else None
            if tool is not None and tool_input is not None:
                content.append(
                    {"type": "tool_use", "id": random_id("toolu_01", 22), "name": tool, "input": tool_input}
                )
                stop_reason = "tool_use"
            else:
                content.append({"type": "text", "text": reply.text})
                stop_reason = "end_turn"
        return {
            "id": random_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or self.default_model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "stop_details": stop_details,
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "standard",
            },
        }

    def error_body(
        self,
        status: int,
        body_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        """Anthropic's error envelope; ``code`` becomes ``error.details.error_code``."""
        fallback = (
            ("api_error", "Internal server error") if status >= 500 else ("invalid_request_error", "Error.")
        )
        default_type, default_message = _ERROR_DEFAULTS.get(status, fallback)
        err: dict[str, Any] = {
            "type": body_type if body_type is not None else default_type,
            "message": message if message is not None else default_message,
        }
        if code is not None:
            err["details"] = {"error_code": code}
        return {"type": "error", "error": err, "request_id": random_id("req_01", 22)}

    def response_headers(self) -> list[tuple[str, str]]:
        return [("request-id", random_id("req_01", 22)), ("anthropic-organization-id", "00000000-test")]


def _as_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
