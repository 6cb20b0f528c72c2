"""Loopback fake OpenAI / Anthropic servers for driving the real SDK clients.

Typical use in a test::

    from tests.servers import OpenAIServer, error, ok

    with OpenAIServer() as server:
        server.enqueue(error(429, retry_after=0), ok({"answer": 42}))
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        ...
        assert len(server.requests) == 2
"""

from __future__ import annotations

from .anthropic_server import AnthropicServer
from .base import (
    FakeLLMServer,
    RecordedRequest,
    Reply,
    ReplyFactory,
    ReplyKind,
    ScriptItem,
    Usage,
    content_filter,
    error,
    gzip_bomb,
    invalid_json,
    ok,
    refusal,
    reset,
    slow,
    trickle,
    truncated,
)
from .openai_server import OpenAIServer
from .schema_example import SchemaError, example_from_schema

__all__ = [
    "AnthropicServer",
    "FakeLLMServer",
    "OpenAIServer",
    "RecordedRequest",
    "Reply",
    "ReplyFactory",
    "ReplyKind",
    "SchemaError",
    "ScriptItem",
    "Usage",
    "content_filter",
    "error",
    "example_from_schema",
    "gzip_bomb",
    "invalid_json",
    "ok",
    "refusal",
    "reset",
    "slow",
    "trickle",
    "truncated",
]
