"""A fake OpenAI Chat Completions endpoint (``POST /v1/chat/completions``).

Only non-streaming requests are served; ``stream: true`` gets the 400 the
real API would give for an unsupported parameter, so a code path that streams
by accident fails loudly instead of hanging.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from .base import FakeLLMServer, Reply, Usage, random_id

__all__ = ["OpenAIServer"]

_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    # status: (type, code, message) as the real API words them
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "The model does not exist or you do not have access to it."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


class OpenAIServer(FakeLLMServer):
    """Speaks the Chat Completions wire format the ``openai`` SDK parses.

    Where the answer goes:

    * request has ``tools`` (and ``tool_choice`` is not ``"none"``): one tool
      call to the tool named by ``tool_choice`` (else the first tool), whose
      ``function.arguments`` is the reply text verbatim.  Like the real API,
      ``finish_reason`` is ``"stop"`` when ``tool_choice`` names the function
      and ``"tool_calls"`` otherwise;
    * no tools: ``message.content`` is the reply text (JSON for ``ok``).

    ``truncated`` keeps that placement with finish_reason ``"length"``;
    ``refusal`` sets ``message.refusal`` with null content; ``content_filter``
    sends finish_reason ``"content_filter"`` and no tool call.
    """

    vendor: ClassVar[str] = "openai"
    base_path: ClassVar[str] = "/v1"
    endpoint: ClassVar[str] = "/v1/chat/completions"
    default_model: ClassVar[str] = "gpt-4o-mini"

    def validate(self, body: dict[str, Any]) -> tuple[str, str | None] | None:
        if body.get("stream"):
            return ("Streaming is not supported by this test server; send stream=false.", "stream")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return ("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return ("[] is too short - 'messages'", "messages")
        return None

    @staticmethod
    def selected_tool(body: Mapping[str, Any]) -> tuple[str, bool] | None:
        """(function name, forced by tool_choice) the model would call, or None."""
        tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping) and t.get("type") == "function"]
        choice = body.get("tool_choice")
        if not tools or choice == "none":
            return None
        if isinstance(choice, Mapping) and choice.get("type") == "function":
            name = (choice.get("function") or {}).get("name")
            if isinstance(name, str):
                return name, True
        return str(tools[0]["function"]["name"]), False

    def requested_schema(self, body: dict[str, Any]) -> Mapping[str, Any] | None:
        tool = self.selected_tool(body)
        if tool is not None:
            for t in body.get("tools") or []:
                function = t.get("function") or {}
                if function.get("name") == tool[0]:
                    params = function.get("parameters")
                    return params if isinstance(params, Mapping) else {"type": "object"}
        response_format = body.get("response_format")
        if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            return schema if isinstance(schema, Mapping) else None
        return None

    def render(self, reply: Reply, body: dict[str, Any], usage: Usage) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        tool = self.selected_tool(body)
        if reply.kind == "refusal":
            message["refusal"] = reply.text
            finish_reason = "stop"
        elif reply.kind == "content_filter":
            message["content"] = reply.text or None
            finish_reason = "content_filter"
        elif tool is not None:
            name, forced = tool
            message["tool_calls"] = [
                {
                    "id": random_id("call_", 24),
                    "type": "function",
                    "function": {"name": name, "arguments": reply.text},
                }
            ]
            finish_reason = "stop" if forced else "tool_calls"
        else:
            message["content"] = reply.text
            finish_reason = "stop"
        if reply.kind == "truncated":
            finish_reason = "length"
        return {
            "id": random_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.default_model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_stepline_test",
        }

    def error_body(
        self,
        status: int,
        body_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        fallback = (
            ("server_error", None, "Server error.")
            if status >= 500
            else ("invalid_request_error", None, "Error.")
        )
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(status, fallback)
        return {
            "error": {
                "message": message if message is not None else default_message,
                "type": body_type if body_type is not None else default_type,
                "param": param,
                "code": code if code is not None else default_code,
            }
        }

    def response_headers(self) -> list[tuple[str, str]]:
        return [
            ("x-request-id", random_id("req_", 32)),
            ("openai-version", "2020-10-01"),
            ("openai-processing-ms", "1"),
        ]
