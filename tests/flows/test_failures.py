"""Failures are classified, stored with the raw output byte-for-byte, and never advance the flow."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from flows.engine import Runtime
from flows.instances import run_workflow
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
    if failure in {"schema_invalid", "truncated", "refused"}:
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
    assert first.expected_schema["title"] == "Invoice"
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
        (content_filter(), "refused", None),
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
        assert attempt.expected_schema is not None


@pytest.mark.parametrize(
    ("reply", "failure"),
    [
        (error(529), "overloaded"),
        (error(429, retry_after=0.1), "rate_limited"),
        (refusal("No."), "refused"),
        (truncated('{"vendor": "Ac'), "truncated"),
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
