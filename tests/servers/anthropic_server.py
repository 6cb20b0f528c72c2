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
    * no tools: a single ``text`` block holding the reply text. With
      ``output_config.format`` (structured outputs) that is the JSON answer,
      and an unscripted reply is an instance of its schema; a malformed
      ``output_config``, or a schema structured outputs cannot compile, gets
      the real API's 400 ``invalid_request_error``
      (``output_config_problem``).

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
        if body.get("output_config") is not None:
            return output_config_problem(body["output_config"])
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


_EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
_UNSUPPORTED_KEYWORDS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
    }
)
"""Bounds the grammar compiler refuses (the SDK's ``transform_schema`` moves them into descriptions)."""
_STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)


def output_config_problem(value: Any) -> tuple[str, str | None] | None:
    """Why the Messages API would refuse ``output_config`` with a 400, or None.

    Checks the envelope (``{"effort"?, "format"?: {"type": "json_schema", "schema": {...}}}``)
    and the schema subset structured outputs accept: every object schema sets
    ``additionalProperties: false``, no numeric / length / item-count bounds (``minItems`` 0
    or 1 only), supported string formats only.
    """
    if not isinstance(value, Mapping):
        return ("output_config: Input should be a valid dictionary", "output_config")
    for key in value:
        if key not in ("effort", "format"):
            return (f"output_config.{key}: Extra inputs are not permitted", f"output_config.{key}")
    effort = value.get("effort")
    if effort is not None and effort not in _EFFORTS:
        return (f"output_config.effort: Input should be one of {sorted(_EFFORTS)}", "output_config.effort")
    fmt = value.get("format")
    if fmt is None:
        return None
    where = "output_config.format"
    if not isinstance(fmt, Mapping):
        return (f"{where}: Input should be a valid dictionary", where)
    if fmt.get("type") != "json_schema":
        return (f"{where}.type: Input should be 'json_schema'", f"{where}.type")
    for key in fmt:
        if key not in ("type", "schema"):
            return (f"{where}.{key}: Extra inputs are not permitted", f"{where}.{key}")
    schema = fmt.get("schema")
    if not isinstance(schema, Mapping):
        return (f"{where}.schema: Field required (a JSON schema object)", f"{where}.schema")
    problem = _schema_problem(schema, "")
    return (f"{where}.schema: {problem}", f"{where}.schema") if problem else None


def _schema_problem(schema: Any, path: str) -> str | None:
    """The first part of ``schema`` structured outputs cannot compile, as the API words it."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            found = _schema_problem(item, f"{path}/{index}")
            if found:
                return found
        return None
    if not isinstance(schema, Mapping):
        return None
    at = path or "/"
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        return f"For 'object' type, 'additionalProperties' must be explicitly set to false (at {at})"
    unsupported = sorted(_UNSUPPORTED_KEYWORDS & set(schema))
    if unsupported:
        return f"'{unsupported[0]}' is not supported (at {at})"
    if schema.get("minItems") not in (None, 0, 1):
        return f"'minItems' values other than 0 or 1 are not supported (at {at})"
    fmt = schema.get("format")
    if schema.get("type") == "string" and fmt is not None and fmt not in _STRING_FORMATS:
        return f"string format {fmt!r} is not supported (at {at})"
    for key in ("properties", "$defs", "definitions"):
        children = schema.get(key)
        if isinstance(children, Mapping):
            for name, child in children.items():
                found = _schema_problem(child, f"{path}/{key}/{name}")
                if found:
                    return found
    for key in ("items", "anyOf", "allOf", "oneOf"):
        if key in schema:
            found = _schema_problem(schema[key], f"{path}/{key}")
            if found:
                return found
    return None


def _as_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
