"""The same output model on OpenAI (tools and json_schema), an OpenAI-compatible server,
Anthropic, and the embedded model, through the real SDKs and a real Prefect flow."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from flows.instances import run_workflow
from flows.runtime import Runtime
from steps.providers import anthropic_output_schema
from storage.models import InstanceStatus
from tests.flows.helpers import INPUT, VALID, Invoice, invoice_workflow
from tests.servers import AnthropicServer, OpenAIServer, ok

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.parametrize(
    ("model_id", "server_name", "provider"),
    [
        ("gpt-test", "openai", "openai"),
        ("gpt-schema", "openai", "openai"),
        ("compat-test", "private", "compat"),
        ("claude-test", "anthropic", "anthropic"),
        ("claude-schema", "anthropic", "anthropic"),
    ],
)
def test_api_providers_return_the_typed_output(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    private_server: OpenAIServer,
    model_id: str,
    server_name: str,
    provider: str,
) -> None:
    servers = {"openai": openai_server, "anthropic": anthropic_server, "private": private_server}
    server = servers.pop(server_name)
    server.enqueue(ok(VALID))
    runtime = make_runtime()

    result = run_workflow(invoice_workflow(model_id), INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED
    assert result.output == Invoice(**VALID)
    assert len(server.requests) == 1
    assert all(not other.requests for other in servers.values())
    sent = server.requests[0].body
    # The extract kind's defaults; Anthropic's Messages API takes no sampling but max_tokens.
    expected = (
        {"max_tokens": 1024}
        if provider == "anthropic"
        else {"temperature": 0.0, "top_p": 1.0, "max_tokens": 1024}
    )
    assert {k: sent[k] for k in ("temperature", "top_p", "max_tokens") if k in sent} == expected
    assert "temperature" not in str(sent["messages"]).lower()

    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    assert detail.instance.flow_run_id  # the Prefect flow run is linked
    assert detail.instance.output == VALID
    (run,) = detail.step_runs
    assert run.status == "completed"
    assert run.output == VALID
    assert run.attempts == 1
    (attempt,) = detail.attempts
    assert attempt.failure_class is None
    assert attempt.provider == provider
    assert attempt.model_id == model_id
    assert attempt.sampling == expected  # what was actually sent
    assert attempt.parsed_output == VALID
    assert attempt.tokens_in == 20
    assert attempt.tokens_out == 10
    model = runtime.settings.models[model_id]
    assert attempt.cost_usd == pytest.approx(model.cost(20, 10))
    assert attempt.prompt_version_id in {v.id for v in runtime.store.prompt_versions("extract-invoice")}
    system = attempt.request_messages[0]  # recorded as sent: Anthropic takes text blocks
    assert system["role"] == "system"
    text = system["content"] if isinstance(system["content"], str) else system["content"][0]["text"]
    assert text == "Extract the invoice's vendor, total and currency."
    assert attempt.request_messages[-1]["content"] == f"Invoice: {INPUT['text']}"
    assert attempt.latency_ms is not None
    assert attempt.latency_ms > 0


def test_tools_and_json_schema_give_the_same_output_on_both_wire_formats(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, anthropic_server: AnthropicServer
) -> None:
    """Unscripted, each server answers with an instance of the schema its request carried: the
    tool's parameters, ``response_format`` or ``output_config.format``, as constrained decoding
    would."""
    runtime = make_runtime()
    outputs = {}
    for model_id in ("gpt-test", "gpt-schema", "claude-test", "claude-schema"):
        result = run_workflow(invoice_workflow(model_id), INPUT, runtime)
        assert result.status is InstanceStatus.COMPLETED, model_id
        outputs[model_id] = result.output
        detail = runtime.store.instance_detail(result.instance_id)
        assert detail is not None
        (attempt,) = detail.attempts
        assert attempt.raw_response is not None  # the body, kept as received
        body = json.loads(attempt.raw_response)
        if model_id.startswith("claude"):
            (block,) = body["content"]
            answer = json.dumps(block["input"]) if block["type"] == "tool_use" else block["text"]
        else:
            message = body["choices"][0]["message"]
            answer = (
                message["tool_calls"][0]["function"]["arguments"]
                if model_id == "gpt-test"
                else message["content"]
            )
        assert Invoice.model_validate_json(answer) == result.output
    assert len({output.model_dump_json() for output in outputs.values() if output}) == 1, outputs

    gpt_tools, gpt_schema = (request.body for request in openai_server.requests)
    assert gpt_tools["tools"]
    assert "response_format" not in gpt_tools
    assert gpt_schema["response_format"]["type"] == "json_schema"
    assert gpt_schema["response_format"]["json_schema"]["schema"]["properties"].keys() == VALID.keys()
    assert "tools" not in gpt_schema
    assert "tool_choice" not in gpt_schema

    claude_tools, claude_schema = (request.body for request in anthropic_server.requests)
    assert claude_tools["tools"]
    assert "output_config" not in claude_tools
    assert claude_schema["output_config"] == {
        "format": {"type": "json_schema", "schema": anthropic_output_schema(Invoice.model_json_schema())}
    }
    assert claude_schema["output_config"]["format"]["schema"]["additionalProperties"] is False
    assert "tools" not in claude_schema
    assert "tool_choice" not in claude_schema


def test_prompt_versions_are_shared_until_the_text_changes(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.default = ok(VALID)
    runtime = make_runtime()
    first = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)
    second = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)
    versions = runtime.store.prompt_versions("extract-invoice")
    assert len(versions) == 1
    assert versions[0].author == "code"  # from the workflow's code, not whoever ran it
    ids = set()
    for result in (first, second):
        detail = runtime.store.instance_detail(result.instance_id)
        assert detail is not None
        ids.add(detail.attempts[0].prompt_version_id)
    assert ids == {versions[0].id}


@pytest.mark.embedded
def test_embedded_model_returns_the_same_typed_output(make_runtime: Callable[[], Runtime]) -> None:
    runtime = make_runtime()
    result = run_workflow(invoice_workflow("smollm2", max_reasks=3), INPUT, runtime)

    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    assert result.status is InstanceStatus.COMPLETED, [
        (a.failure_class, a.raw_output, a.validation_errors) for a in detail.attempts
    ]
    assert isinstance(result.output, Invoice)
    last = detail.attempts[-1]
    assert last.model_id == "smollm2"
    assert last.provider == "local"
    assert last.failure_class is None
    assert Invoice.model_validate_json(last.raw_output or "") == result.output
    assert last.tokens_in
    assert last.tokens_out
