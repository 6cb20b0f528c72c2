"""Failures are classified, stored with the raw output byte-for-byte, and never advance the flow."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from flows.instances import run_workflow
from flows.runtime import Runtime
from steps.errors import FailureClass
from storage.models import Attempt, InstanceStatus
from tests.flows.helpers import INPUT, VALID, invoice_workflow
from tests.servers import (
    AnthropicServer,
    OpenAIServer,
    Reply,
    content_filter,
    error,
    invalid_json,
    ok,
    refusal,
    reset,
    slow,
    truncated,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def expected_status(failure: str) -> InstanceStatus:
    """Output problems go to a person; everything else pauses for a replay."""
    if FailureClass(failure).behaviour.review:
        return InstanceStatus.NEEDS_REVIEW
    return InstanceStatus.PAUSED


def attempts_of(runtime: Runtime, instance_id: str) -> list[Attempt]:
    detail = runtime.store.instance_detail(instance_id)
    assert detail is not None
    return detail.attempts


def test_every_reask_is_its_own_attempt_with_raw_output_and_errors(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    broken = '{"vendor": "Acme", "total": 12.5,, "currency": "EUR"  \u00e9 }'
    wrong = {"vendor": "Acme", "total": 12.555, "currency": "GBP"}
    openai_server.enqueue(invalid_json(broken), ok(wrong), ok(VALID))
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test", max_reasks=2), INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED
    first, second, third = attempts_of(runtime, result.instance_id)
    assert [a.attempt_number for a in (first, second, third)] == [1, 2, 3]
    assert first.failure_class == second.failure_class == "schema_invalid"
    assert first.raw_output == broken  # byte-for-byte, as received
    assert first.raw_response is not None
    assert json.loads(first.raw_response)["object"] == "chat.completion"
    assert runtime.store.schema(first.schema_hash)["title"] == "Invoice"  # type: ignore[index]
    assert first.schema_hash == second.schema_hash == third.schema_hash  # stored once, referenced
    assert first.validation_errors
    assert first.validation_errors[0]["path"] == "$"
    paths = {e["path"]: e for e in second.validation_errors or []}
    assert set(paths) == {"$.total", "$.currency"}
    assert "2 decimal places" in paths["$.total"]["message"]  # the custom validator's own message
    assert paths["$.currency"]["input"] == "GBP"
    assert second.raw_output == json.dumps(wrong)
    assert third.failure_class is None
    assert third.parsed_output == VALID
    # Instructor re-asked with the validation errors in the conversation.
    assert len(openai_server.requests[1].body["messages"]) > len(openai_server.requests[0].body["messages"])


def test_exhausted_reasks_fail_the_instance_without_advancing(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.default = ok({"vendor": "", "total": -1, "currency": "EUR"})
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test", max_reasks=1), INPUT, runtime)

    assert result.status is InstanceStatus.NEEDS_REVIEW
    assert (result.failed_step, result.failure_class) == ("extract-invoice", "schema_invalid")
    attempts = attempts_of(runtime, result.instance_id)
    assert [a.failure_class for a in attempts] == ["schema_invalid", "schema_invalid"]
    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    assert detail.instance.status == "needs_review"
    assert detail.instance.output is None
    assert detail.step_runs[0].status == "failed"
    assert detail.step_runs[0].attempts == 2


@pytest.mark.parametrize(
    ("reply", "failure", "retry_after"),
    [
        (truncated('{"vendor": "Ac'), "truncated", None),
        (refusal("I can't help with invoices."), "refused", None),
        (content_filter(), "content_filter", None),
        (error(429, code="insufficient_quota", body_type="insufficient_quota"), "quota", None),
        (error(429, retry_after=0.2), "rate_limited", 0.2),
        (error(429, retry_after_ms=150), "rate_limited", 0.15),
        (error(500), "unavailable", None),
        (error(503), "unavailable", None),
        (error(401), "auth", None),
        (error(400), "bad_request", None),
        (slow(2.5), "timeout", None),
        (reset(), "connection", None),
    ],
)
def test_openai_failures_are_classified(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    reply: Reply,
    failure: str,
    retry_after: float | None,
) -> None:
    openai_server.default = reply  # every request fails this way
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)

    assert result.status is expected_status(failure)
    assert result.failure_class == failure
    attempts = attempts_of(runtime, result.instance_id)
    # Never re-asked; retried only when transient, as often as the policy allows.
    assert len(attempts) == 1 + runtime.settings.retry.retries.get(FailureClass(failure), 0)
    for attempt in attempts:
        assert attempt.failure_class == failure
        assert attempt.retry_after_s == (pytest.approx(retry_after) if retry_after else None)
        assert attempt.error_message
        assert runtime.store.schema(attempt.schema_hash) is not None


@pytest.mark.parametrize(
    ("reply", "failure"),
    [
        (error(529), "overloaded"),
        (error(429, retry_after=0.1), "rate_limited"),
        (refusal("No."), "refused"),
        (truncated('{"vendor": "Ac'), "truncated"),
        (error(400, body_type="invalid_request_error", message="Your credit balance is too low"), "quota"),
        (error(429, body_type="rate_limit_error", message="exceeded your monthly spend limit"), "quota"),
        (error(500), "unavailable"),
    ],
)
def test_anthropic_failures_are_classified(
    make_runtime: Callable[[], Runtime],
    anthropic_server: AnthropicServer,
    reply: Reply,
    failure: str,
) -> None:
    anthropic_server.default = reply
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("claude-test"), INPUT, runtime)

    assert (result.status, result.failure_class) == (expected_status(failure), failure)
    attempts = attempts_of(runtime, result.instance_id)
    assert len(attempts) == 1 + runtime.settings.retry.retries.get(FailureClass(failure), 0)
    for attempt in attempts:
        assert attempt.failure_class == failure
        assert attempt.raw_response is not None  # the provider's body, kept as received


def test_sdk_retries_are_disabled(make_runtime: Callable[[], Runtime], openai_server: OpenAIServer) -> None:
    """Every request that reaches the server is one of our recorded attempts: none are hidden."""
    openai_server.default = error(503)
    runtime = make_runtime()
    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)
    assert len(openai_server.requests) == len(attempts_of(runtime, result.instance_id))
    assert all(r.headers.get("x-stainless-retry-count", "0") == "0" for r in openai_server.requests)


def test_a_truncated_reask_is_recorded_and_never_reasked_again(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(invalid_json("{oops"), truncated('{"vendor": "Ac'), truncated('{"vendor": "Ac'))
    runtime = make_runtime()
    result = run_workflow(invoice_workflow("gpt-test", max_reasks=2), INPUT, runtime)
    assert result.failure_class == "truncated"
    attempts = attempts_of(runtime, result.instance_id)
    assert [a.failure_class for a in attempts] == ["schema_invalid", "truncated"]
    assert len(openai_server.requests) == len(attempts) == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (refusal("I can't help with invoices."), 'the model refused: "I can\'t help with invoices."'),
        (content_filter(), "the provider's content filter stopped the answer"),
        (truncated('{"vendor": "Ac'), "the answer was cut off at the token limit"),
    ],
)
def test_an_output_failure_is_named_as_it_is_never_as_a_parse_error(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, reply: Reply, message: str
) -> None:
    openai_server.default = reply
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)

    assert message in (result.error or "")
    (attempt,) = attempts_of(runtime, result.instance_id)
    assert attempt.error_message is not None
    assert attempt.error_message.startswith(message.split(":")[0])
    for parse_error in ("Invalid JSON", "No tool calls", "validation error"):
        assert parse_error not in (result.error or "")
    assert "(1 request(s) in this step)" in (result.error or "")


def test_the_message_counts_every_request_of_the_step(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, anthropic_server: AnthropicServer
) -> None:
    openai_server.default = error(503)  # 1 + 2 retries on gpt-test
    anthropic_server.default = error(529)  # 1 + 3 retries on claude-test
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test", fallbacks=("claude-test",)), INPUT, runtime)

    requests = len(openai_server.requests) + len(anthropic_server.requests)
    assert requests == 7
    assert f"{requests} request(s) in this step" in (result.error or "")
