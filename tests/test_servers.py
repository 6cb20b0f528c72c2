"""The fake vendor servers, exercised through the real openai/anthropic SDKs.

These pin down that each scripted reply surfaces exactly as the SDK shows a
real API's answer (exception class, finish/stop reason, headers), so later
tests of Stepline's retry and validation logic can trust the fakes.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import anthropic
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.servers import (
    AnthropicServer,
    OpenAIServer,
    Reply,
    Usage,
    content_filter,
    error,
    example_from_schema,
    invalid_json,
    ok,
    refusal,
    reset,
    slow,
    truncated,
)
from tests.servers.__main__ import load_script

REPO_ROOT = Path(__file__).resolve().parent.parent
MESSAGES: list[Any] = [{"role": "user", "content": "Extract the person."}]


class Pet(BaseModel):
    kind: Literal["cat", "dog"]


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    age: int = Field(ge=0)
    tags: list[str] = Field(min_length=2)
    pet: Pet | None


PERSON_SCHEMA: dict[str, Any] = Person.model_json_schema()
PERSON = {"name": "Ada", "age": 36, "tags": ["math", "engines"], "pet": None}

OPENAI_TOOLS: list[Any] = [{"type": "function", "function": {"name": "Person", "parameters": PERSON_SCHEMA}}]
OPENAI_CHOICE: Any = {"type": "function", "function": {"name": "Person"}}
ANTHROPIC_TOOLS: list[Any] = [{"name": "Person", "description": "A person.", "input_schema": PERSON_SCHEMA}]
ANTHROPIC_CHOICE: Any = {"type": "tool", "name": "Person"}
PROSE = "Sure! Here is the person: {name: Ada"


# One server and one client per vendor for the module: building an SDK client
# costs ~50 ms (SSL context), so per-test instances would double the run time.
# Each test still starts from an empty script and an empty request log.


@pytest.fixture(scope="module")
def _oai_pair() -> Iterator[tuple[OpenAIServer, openai.OpenAI]]:
    with (
        OpenAIServer() as server,
        openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client,
    ):
        yield server, client


@pytest.fixture(scope="module")
def _ant_pair() -> Iterator[tuple[AnthropicServer, anthropic.Anthropic]]:
    with (
        AnthropicServer() as server,
        anthropic.Anthropic(base_url=server.base_url, api_key="test", max_retries=0) as client,
    ):
        yield server, client


@pytest.fixture
def oai_server(_oai_pair: tuple[OpenAIServer, openai.OpenAI]) -> OpenAIServer:
    server = _oai_pair[0]
    server.reset_script()
    server.clear()
    return server


@pytest.fixture
def oai(_oai_pair: tuple[OpenAIServer, openai.OpenAI], oai_server: OpenAIServer) -> openai.OpenAI:
    """The shared client; requesting it also resets the shared server."""
    return _oai_pair[1]


@pytest.fixture
def ant_server(_ant_pair: tuple[AnthropicServer, anthropic.Anthropic]) -> AnthropicServer:
    server = _ant_pair[0]
    server.reset_script()
    server.clear()
    return server


@pytest.fixture
def ant(
    _ant_pair: tuple[AnthropicServer, anthropic.Anthropic], ant_server: AnthropicServer
) -> anthropic.Anthropic:
    """The shared client; requesting it also resets the shared server."""
    return _ant_pair[1]


def _oai_tool_call(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=OPENAI_TOOLS, tool_choice=OPENAI_CHOICE, **kwargs
    )


def _ant_tool_call(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    return client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        messages=MESSAGES,
        tools=ANTHROPIC_TOOLS,
        tool_choice=ANTHROPIC_CHOICE,
        **kwargs,
    )


# --- OpenAI -------------------------------------------------------------------


def test_openai_ok_with_tools_is_a_forced_tool_call(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(ok(PERSON))
    completion = _oai_tool_call(oai, temperature=0.1)

    choice = completion.choices[0]
    assert choice.finish_reason == "stop"  # the real API says "stop" when tool_choice names the function
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "Person"
    assert call.function.arguments == json.dumps(PERSON)
    assert choice.message.content is None
    assert choice.message.refusal is None
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.id.startswith("chatcmpl-")
    assert call.id.startswith("call_")
    assert completion.usage is not None
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (
        20,
        10,
        30,
    )
    assert completion._request_id is not None
    assert completion._request_id.startswith("req_")

    (request,) = oai_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body["temperature"] == 0.1
    assert request.body["tool_choice"] == OPENAI_CHOICE
    assert request.headers["authorization"] == "Bearer test"
    assert request.headers["x-stainless-retry-count"] == "0"


def test_openai_auto_tool_choice_reports_tool_calls(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(ok(PERSON))
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=OPENAI_TOOLS)
    assert completion.choices[0].finish_reason == "tool_calls"


def test_openai_ok_without_tools_is_content(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(ok(PERSON, usage=Usage(input_tokens=7, output_tokens=3)))
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, response_format={"type": "json_object"}
    )
    message = completion.choices[0].message
    assert json.loads(message.content or "") == PERSON
    assert message.tool_calls is None
    assert completion.usage is not None
    assert completion.usage.total_tokens == 10


def test_openai_parse_helper_validates_content(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(ok(PERSON))
    completion = oai.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Person)
    assert completion.choices[0].message.parsed == Person.model_validate(PERSON)
    assert oai_server.last_request.body["response_format"]["type"] == "json_schema"


def test_openai_default_reply_follows_response_format_schema(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Person)
    assert isinstance(completion.choices[0].message.parsed, Person)


@pytest.mark.parametrize("reply", [invalid_json('{"name": "Ada", '), ok('{"name": "Ada", ')])
def test_openai_invalid_json_arrives_verbatim(
    oai_server: OpenAIServer, oai: openai.OpenAI, reply: Reply
) -> None:
    oai_server.enqueue(reply)
    arguments = _oai_tool_call(oai).choices[0].message.tool_calls[0].function.arguments
    assert arguments == '{"name": "Ada", '
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)


def test_openai_truncated_is_finish_reason_length(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(truncated('{"name": "Ad'), truncated('{"name": "Ad'))
    choice = _oai_tool_call(oai).choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.tool_calls[0].function.arguments == '{"name": "Ad'
    with pytest.raises(openai.LengthFinishReasonError):
        oai.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Person)


def test_openai_refusal(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(refusal("I can't help with that."), refusal("No."))
    choice = _oai_tool_call(oai).choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.refusal == "I can't help with that."
    assert choice.message.content is None
    assert choice.message.tool_calls is None
    parsed = oai.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Person)
    assert parsed.choices[0].message.parsed is None
    assert parsed.choices[0].message.refusal == "No."


def test_openai_content_filter(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(content_filter(), content_filter())
    choice = _oai_tool_call(oai).choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.tool_calls is None
    with pytest.raises(openai.ContentFilterFinishReasonError):
        oai.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Person)


def test_openai_429_with_retry_after(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(error(429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as info:
        _oai_tool_call(oai)
    exc = info.value
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "2"
    assert "retry-after-ms" not in exc.response.headers
    assert exc.code == "rate_limit_exceeded"
    assert exc.type == "requests"
    assert isinstance(exc.body, dict)
    assert exc.body["code"] == "rate_limit_exceeded"
    assert exc.request_id is not None


@pytest.mark.parametrize("status", [500, 503])
def test_openai_5xx_is_internal_server_error(
    oai_server: OpenAIServer, oai: openai.OpenAI, status: int
) -> None:
    oai_server.enqueue(error(status))
    with pytest.raises(openai.InternalServerError) as info:
        _oai_tool_call(oai)
    assert info.value.status_code == status
    assert info.value.type == "server_error"


def test_openai_sdk_retry_honours_retry_after_ms(oai_server: OpenAIServer) -> None:
    """retry-after-ms wins over retry-after; the SDK sleeps that long, then retries."""
    oai_server.enqueue(error(429, retry_after=30, retry_after_ms=150), ok(PERSON))
    with openai.OpenAI(base_url=oai_server.base_url, api_key="test", max_retries=1) as client:
        completion = _oai_tool_call(client)
    assert completion.choices[0].message.tool_calls[0].function.arguments == json.dumps(PERSON)
    first, second = oai_server.requests
    assert 0.14 <= second.monotonic - first.monotonic < 1.0
    assert second.headers["x-stainless-retry-count"] == "1"


def test_openai_stream_is_rejected(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert info.value.param == "stream"
    assert oai_server.pending == 0


def test_openai_slow_reply_times_out(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(slow(5))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _oai_tool_call(oai, timeout=0.2)
    assert time.monotonic() - started < 2


def test_openai_slow_reply_then_answers(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(slow(0.1, then=ok({"late": True})))
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, timeout=5)
    assert json.loads(completion.choices[0].message.content or "") == {"late": True}


def test_openai_reset_is_connection_error(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.enqueue(reset(), ok(PERSON))
    with pytest.raises(openai.APIConnectionError) as info:
        _oai_tool_call(oai)
    assert not isinstance(info.value, openai.APITimeoutError)
    # the pool recovers: the next call opens a fresh connection and succeeds
    assert _oai_tool_call(oai).choices[0].message.tool_calls[0].function.arguments == json.dumps(PERSON)


def test_openai_default_reply_is_guessed_from_tool_schema(
    oai_server: OpenAIServer, oai: openai.OpenAI
) -> None:
    arguments = _oai_tool_call(oai).choices[0].message.tool_calls[0].function.arguments
    Person.model_validate_json(arguments)


def test_openai_callable_default_sees_the_request(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.default = lambda body: ok(
        {"echo": body["messages"][-1]["content"], "n": len(body["messages"])}
    )
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert json.loads(completion.choices[0].message.content or "") == {"echo": "Extract the person.", "n": 1}


def test_openai_latency_median_is_far_below_nagle_stall(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    oai_server.default = ok(PERSON)
    durations = []
    for _ in range(20):
        started = time.perf_counter()
        _oai_tool_call(oai)
        durations.append(time.perf_counter() - started)
    assert statistics.median(durations) < 0.025, durations  # a Nagle + delayed-ACK stall is >= 0.04


# --- Anthropic ----------------------------------------------------------------


def test_anthropic_ok_with_tools_is_tool_use(ant_server: AnthropicServer, ant: anthropic.Anthropic) -> None:
    ant_server.enqueue(ok(PERSON))
    message = _ant_tool_call(ant, system="Be terse.")

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.stop_reason == "tool_use"
    assert message.stop_sequence is None
    (block,) = message.content
    assert block.type == "tool_use"
    assert block.name == "Person"
    assert block.input == PERSON
    assert block.id.startswith("toolu_")
    assert message.id.startswith("msg_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 10)

    (request,) = ant_server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.body["system"] == "Be terse."
    assert request.body["max_tokens"] == 256
    # anthropic 2.x sends api_key as a Bearer token, not as x-api-key
    assert request.headers["authorization"] == "Bearer test"
    assert request.headers["anthropic-version"]


def test_anthropic_str_payload_is_parsed_into_input(
    ant_server: AnthropicServer, ant: anthropic.Anthropic
) -> None:
    ant_server.enqueue(ok('{"name": "Ada"}'))
    block = _ant_tool_call(ant).content[0]
    assert block.type == "tool_use"
    assert block.input == {"name": "Ada"}


def test_anthropic_ok_without_tools_is_text(ant_server: AnthropicServer, ant: anthropic.Anthropic) -> None:
    ant_server.enqueue(ok(PERSON))
    message = ant.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    (block,) = message.content
    assert block.type == "text"
    assert json.loads(block.text) == PERSON
    assert message.stop_reason == "end_turn"


@pytest.mark.parametrize("reply", [invalid_json(PROSE), ok(PROSE)])
def test_anthropic_invalid_json_is_text_not_tool_use(
    ant_server: AnthropicServer, ant: anthropic.Anthropic, reply: Reply
) -> None:
    """tool_use.input must be an object, so non-JSON output can only be a text block."""
    ant_server.enqueue(reply)
    message = _ant_tool_call(ant)
    (block,) = message.content
    assert block.type == "text"
    assert block.text == PROSE
    assert message.stop_reason == "end_turn"


def test_anthropic_truncated_is_max_tokens(ant_server: AnthropicServer, ant: anthropic.Anthropic) -> None:
    ant_server.enqueue(truncated('{"name": "Ad'))
    message = _ant_tool_call(ant)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text"
    assert message.content[0].text == '{"name": "Ad'


@pytest.mark.parametrize("reply", [refusal("Declined."), content_filter("Declined.")])
def test_anthropic_refusal(ant_server: AnthropicServer, ant: anthropic.Anthropic, reply: Reply) -> None:
    ant_server.enqueue(reply)
    message = _ant_tool_call(ant)
    assert message.stop_reason == "refusal"
    assert message.content == []
    assert message.stop_details is not None
    assert message.stop_details.explanation == "Declined."


def test_anthropic_429_with_retry_after(ant_server: AnthropicServer, ant: anthropic.Anthropic) -> None:
    ant_server.enqueue(error(429, retry_after=2, retry_after_ms=1500))
    with pytest.raises(anthropic.RateLimitError) as info:
        _ant_tool_call(ant)
    exc = info.value
    assert exc.status_code == 429
    assert exc.type == "rate_limit_error"
    assert exc.response.headers["retry-after"] == "2"
    assert exc.response.headers["retry-after-ms"] == "1500"
    assert isinstance(exc.body, dict)
    assert exc.body["type"] == "error"
    assert exc.request_id is not None


@pytest.mark.parametrize(
    ("status", "exc_type", "body_type"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_anthropic_5xx_exception_classes(
    ant_server: AnthropicServer,
    ant: anthropic.Anthropic,
    status: int,
    exc_type: type[anthropic.APIStatusError],
    body_type: str,
) -> None:
    ant_server.enqueue(error(status))
    with pytest.raises(anthropic.InternalServerError) as info:
        _ant_tool_call(ant)
    assert type(info.value) is exc_type  # 503 and 529 are subclasses of InternalServerError
    assert info.value.status_code == status
    assert info.value.type == body_type


def test_anthropic_slow_reply_times_out(ant_server: AnthropicServer, ant: anthropic.Anthropic) -> None:
    ant_server.enqueue(slow(5))
    with pytest.raises(anthropic.APITimeoutError):
        _ant_tool_call(ant, timeout=0.2)


def test_anthropic_reset_is_connection_error(ant_server: AnthropicServer, ant: anthropic.Anthropic) -> None:
    ant_server.enqueue(reset())
    with pytest.raises(anthropic.APIConnectionError) as info:
        _ant_tool_call(ant)
    assert not isinstance(info.value, anthropic.APITimeoutError)


def test_anthropic_default_reply_is_guessed_from_tool_schema(
    ant_server: AnthropicServer, ant: anthropic.Anthropic
) -> None:
    block = _ant_tool_call(ant).content[0]
    assert block.type == "tool_use"
    Person.model_validate(block.input)


def test_anthropic_output_config_answer_is_text_following_the_schema(
    ant_server: AnthropicServer, ant: anthropic.Anthropic
) -> None:
    schema = anthropic.transform_schema(Person)
    message = ant.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        messages=MESSAGES,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    (block,) = message.content
    assert block.type == "text"
    assert message.stop_reason == "end_turn"
    # What the grammar enforces is the transformed schema (Person's min 2 tags became a hint).
    jsonschema.validate(json.loads(block.text), schema)
    assert ant_server.last_request.body["output_config"]["format"]["schema"] == schema


@pytest.mark.parametrize(
    ("output_config", "says"),
    [
        ("json", "output_config: Input should be a valid dictionary"),
        ({"format": {"type": "json_object", "schema": {}}}, "output_config.format.type"),
        ({"format": {"type": "json_schema"}}, "output_config.format.schema: Field required"),
        ({"format": {"type": "json_schema", "schema": {}, "name": "x"}}, "output_config.format.name"),
        ({"effort": "extreme"}, "output_config.effort"),
        ({"formats": {}}, "output_config.formats: Extra inputs are not permitted"),
        (  # the raw Pydantic schema, not transformed: objects lack additionalProperties false
            {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
            "'additionalProperties' must be explicitly set to false (at /)",
        ),
        (
            {
                "format": {
                    "type": "json_schema",
                    "schema": {**anthropic.transform_schema(Person), "$defs": {}},
                }
            },
            None,
        ),
        (
            {
                "format": {
                    "type": "json_schema",
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"age": {"type": "integer", "minimum": 0}},
                    },
                }
            },
            "'minimum' is not supported (at /properties/age)",
        ),
    ],
)
def test_anthropic_malformed_output_config_is_a_400(
    ant_server: AnthropicServer, ant: anthropic.Anthropic, output_config: Any, says: str | None
) -> None:
    def send() -> Any:
        return ant.messages.create(
            model="claude-sonnet-4-6", max_tokens=256, messages=MESSAGES, output_config=output_config
        )

    if says is None:
        send()
        return
    with pytest.raises(anthropic.BadRequestError) as info:
        send()
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert says in info.value.body["error"]["message"]


# --- server mechanics -----------------------------------------------------------


def test_unknown_path_and_bad_body_get_vendor_errors(
    oai_server: OpenAIServer, ant_server: AnthropicServer
) -> None:
    with (
        openai.OpenAI(base_url=oai_server.origin, api_key="test", max_retries=0) as client,  # no /v1
        pytest.raises(openai.NotFoundError),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with (
        anthropic.Anthropic(base_url=ant_server.base_url, api_key="test", max_retries=0) as client_a,
        pytest.raises(anthropic.BadRequestError),
    ):
        client_a.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=[])
    assert [r.reply for r in oai_server.requests + ant_server.requests] == [None, None]


def test_script_helpers(oai_server: OpenAIServer, oai: openai.OpenAI) -> None:
    assert oai_server.requests == []
    oai_server.enqueue(error(500), error(500))
    oai_server.default = ok({"x": 1})
    oai_server.reset_script()
    assert oai_server.pending == 0
    assert oai_server.default is None
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(oai_server.requests) == 1
    oai_server.clear()
    assert oai_server.requests == []


def test_stop_does_not_wait_for_slow_replies() -> None:
    with OpenAIServer(script=[slow(30)]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=0.2)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        client.close()
        started = time.monotonic()
    assert time.monotonic() - started < 1


def test_reply_from_dict_and_load_script(tmp_path: Path) -> None:
    script = tmp_path / "script.jsonl"
    script.write_text(
        "# comment\n"
        '{"kind": "error", "status": 429, "retry_after": 2}\n'
        "\n"
        '{"kind": "slow", "seconds": 0.5, "then": {"kind": "ok", "payload": {"a": 1}}}\n'
        '{"kind": "reset"}\n',
        encoding="utf-8",
    )
    assert load_script(script) == [error(429, retry_after=2), slow(0.5, then=ok({"a": 1})), reset()]
    with pytest.raises(ValueError, match="unexpected keys"):
        Reply.from_dict({"kind": "reset", "status": 500})


def test_example_from_schema() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 10},
            "i": {"type": "integer", "exclusiveMinimum": 5, "maximum": 9},
            "f": {"type": "number", "minimum": 1.5},
            "b": {"type": "boolean"},
            "e": {"enum": ["x", "y"]},
            "opt": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Inner"}]},
            "arr": {"type": "array", "items": {"$ref": "#/$defs/Inner"}, "minItems": 1},
            "when": {"type": "string", "format": "date-time"},
            "skipped": {"type": "string"},
        },
        "required": ["s", "long", "i", "f", "b", "e", "opt", "arr", "when"],
        "$defs": {"Inner": {"type": "object", "properties": {"k": {"const": 7}}, "required": ["k"]}},
    }
    assert example_from_schema(schema) == {
        "s": "exa",
        "long": "examplexxx",
        "i": 6,
        "f": 1.5,
        "b": False,
        "e": "x",
        "opt": {"k": 7},
        "arr": [{"k": 7}],
        "when": "2024-01-01T00:00:00Z",
    }


def test_cli_serves_script_then_defaults(tmp_path: Path) -> None:
    script = tmp_path / "script.jsonl"
    script.write_text('{"kind": "error", "status": 429, "retry_after": 1}\n', encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers", "openai", "--script", str(script), "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "base_url=" in line, line
        base_url = line.strip().split("base_url=", 1)[1]
        with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
            with pytest.raises(openai.RateLimitError):
                _oai_tool_call(client)
            Person.model_validate_json(
                _oai_tool_call(client).choices[0].message.tool_calls[0].function.arguments
            )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
