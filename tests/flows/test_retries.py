"""Transient failures retry with backoff (never sooner than asked); fallbacks never cross pii."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from prefect import flow

from flows.engine import run_step
from flows.instances import run_workflow
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.definition import Sensitivity, Step
from steps.errors import ConfigError
from storage.models import Attempt, InstanceStatus
from tests.flows.helpers import INPUT, VALID, Document, Invoice, invoice_workflow
from tests.servers import AnthropicServer, OpenAIServer, error, ok, refusal, reset, slow

pytestmark = pytest.mark.usefixtures("prefect_harness")


def attempts_of(runtime: Runtime, instance_id: str) -> list[Attempt]:
    detail = runtime.store.instance_detail(instance_id)
    assert detail is not None
    return detail.attempts


@pytest.mark.parametrize(
    ("reply", "asked"),
    [
        (error(429, retry_after=0.4), 0.4),
        (error(429, retry_after_ms=300), 0.3),
        (error(529, retry_after=0.3), 0.3),
    ],
)
def test_rate_limits_are_retried_no_sooner_than_asked(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, reply: object, asked: float
) -> None:
    openai_server.enqueue(reply, ok(VALID))  # type: ignore[arg-type]
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED
    first, second = attempts_of(runtime, result.instance_id)
    assert first.failure_class in {"rate_limited", "overloaded"}
    assert first.retry_after_s == pytest.approx(asked)
    assert second.failure_class is None
    assert second.wait_s is not None
    assert second.wait_s >= asked
    gap = openai_server.requests[1].monotonic - openai_server.requests[0].monotonic
    assert gap >= asked


def test_transient_errors_back_off_with_jitter_then_succeed(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(error(503), reset(), slow(3.0), ok(VALID))
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED
    attempts = attempts_of(runtime, result.instance_id)
    assert [a.failure_class for a in attempts] == ["unavailable", "connection", "timeout", None]
    waits = [a.wait_s for a in attempts]
    assert waits[0] is None
    policy = runtime.settings.retry
    assert all(w is not None and 0 < w <= policy.max_delay_s for w in waits[1:])


def test_retries_per_class_are_bounded_and_auth_never_retries(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.default = error(503)
    runtime = make_runtime()
    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)
    budget = runtime.settings.retry.retries["unavailable"]  # type: ignore[index]
    assert (result.status, result.failure_class) == (InstanceStatus.PAUSED, "unavailable")
    assert len(openai_server.requests) == 1 + budget

    openai_server.clear()
    openai_server.default = error(401)
    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)
    assert result.failure_class == "auth"
    assert len(openai_server.requests) == 1


def test_exhausted_model_falls_back_to_the_next_in_the_chain(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, anthropic_server: AnthropicServer
) -> None:
    openai_server.default = error(503)
    anthropic_server.default = ok(VALID)
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test", fallbacks=("claude-test",)), INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED
    attempts = attempts_of(runtime, result.instance_id)
    assert [a.model_id for a in attempts] == ["gpt-test"] * 3 + ["claude-test"]
    assert [a.attempt_number for a in attempts] == [1, 2, 3, 4]  # numbered across the chain
    reason = attempts[-1].routing_reason or ""
    assert "fallback #1" in reason
    assert "gpt-test failed with unavailable" in reason


def test_a_long_retry_after_moves_on_instead_of_waiting(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, anthropic_server: AnthropicServer
) -> None:
    openai_server.default = error(429, retry_after=3600)
    anthropic_server.default = ok(VALID)
    runtime = make_runtime()
    result = run_workflow(invoice_workflow("gpt-test", fallbacks=("claude-test",)), INPUT, runtime)
    assert result.status is InstanceStatus.COMPLETED
    assert len(openai_server.requests) == 1


def test_refusals_are_not_laundered_through_another_model(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, anthropic_server: AnthropicServer
) -> None:
    openai_server.default = refusal("I won't.")
    anthropic_server.default = ok(VALID)
    runtime = make_runtime()

    result = run_workflow(invoice_workflow("gpt-test", fallbacks=("claude-test",)), INPUT, runtime)
    assert (result.status, result.failure_class) == (InstanceStatus.NEEDS_REVIEW, "refused")
    assert anthropic_server.requests == []

    allowed = invoice_workflow("gpt-test", fallbacks=("claude-test",), fallback_on_refusal=True)
    assert run_workflow(allowed, INPUT, runtime).status is InstanceStatus.COMPLETED
    assert len(anthropic_server.requests) == 1


def test_pii_steps_never_reach_a_public_server_even_when_every_private_model_fails(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    private_server: OpenAIServer,
) -> None:
    private_server.default = error(503)
    openai_server.default = ok(VALID)
    anthropic_server.default = ok(VALID)
    runtime = make_runtime()

    # Routed (not pinned): the router may only pick private models, and the chain adds one more.
    workflow = invoice_workflow(None, sensitivity=Sensitivity.PII, fallbacks=("compat-big",))
    result = run_workflow(workflow, INPUT, runtime)

    assert (result.status, result.failure_class) == (InstanceStatus.PAUSED, "unavailable")
    assert openai_server.requests == []
    assert anthropic_server.requests == []
    assert {r.body["model"] for r in private_server.requests} == {"qwen2.5", "qwen2.5-72b"}
    assert {a.provider for a in attempts_of(runtime, result.instance_id)} == {"compat"}


def test_a_chain_that_would_send_pii_to_a_public_model_is_rejected_at_load(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    workflow = invoice_workflow("compat-test", sensitivity=Sensitivity.PII, fallbacks=("gpt-test",))
    with pytest.raises(
        ConfigError,
        match=r"step 'extract-invoice' may use private models only \(the step is declared pii\) but falls "
        r"back to model 'gpt-test' on provider 'openai', which is not private; name a private model there$",
    ):
        run_workflow(workflow, INPUT, runtime)
    assert runtime.store.list_instances() == []
    assert openai_server.requests == []


def test_schema_failure_escalates_once_to_a_more_capable_model_when_the_step_opts_in(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, anthropic_server: AnthropicServer
) -> None:
    openai_server.default = ok({"vendor": "Acme", "total": "n/a", "currency": "EUR"})
    anthropic_server.default = ok(VALID)
    runtime = make_runtime()
    base = invoice_workflow("gpt-test", max_reasks=1)
    step: Step[Document, Invoice] = replace(base.steps[0], escalate_on_schema_failure=True)

    @flow(name="escalating")
    def escalating(document: Document) -> Invoice:
        return run_step(step, document)

    workflow = Workflow(
        name="escalating",
        description="t",
        flow=escalating,
        input_model=Document,
        output_model=Invoice,
        steps=(step,),
    )
    result = run_workflow(workflow, INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED
    attempts = attempts_of(runtime, result.instance_id)
    assert [(a.model_id, a.failure_class) for a in attempts] == [
        ("gpt-test", "schema_invalid"),
        ("gpt-test", "schema_invalid"),
        ("compat-big", None),  # the cheapest eligible model of a higher tier
    ]
    assert "escalated from gpt-test (cheap) after schema failures" in (attempts[-1].routing_reason or "")


QUOTA = {
    "openai": error(
        429, code="insufficient_quota", body_type="insufficient_quota", message="You exceeded your quota"
    ),
    "anthropic": error(400, body_type="invalid_request_error", message="Your credit balance is too low"),
}


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_spent_quota_is_asked_once_then_the_model_is_out_for_every_caller(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    wire: str,
) -> None:
    spent, other = (
        (openai_server, anthropic_server) if wire == "openai" else (anthropic_server, openai_server)
    )
    model, fallback = ("gpt-test", "claude-test") if wire == "openai" else ("claude-test", "gpt-test")
    spent.default = QUOTA[wire]
    other.default = ok(VALID)
    runtime = make_runtime()

    first = run_workflow(invoice_workflow(model, fallbacks=(fallback,)), INPUT, runtime)

    assert first.status is InstanceStatus.COMPLETED  # on the fallback, after one request
    assert len(spent.requests) == 1
    assert [a.failure_class for a in attempts_of(runtime, first.instance_id)] == ["quota", None]

    # The model is out of service for every caller in this process: nothing more is sent to it.
    second = run_workflow(invoice_workflow(model, fallbacks=(fallback,)), INPUT, runtime)
    alone = run_workflow(invoice_workflow(model), INPUT, runtime)

    assert second.status is InstanceStatus.COMPLETED
    assert (alone.status, alone.failure_class) == (InstanceStatus.PAUSED, "quota")
    assert f"not sent to {model}" in (alone.error or "")
    assert "quota ran out at" in (alone.error or "")
    assert len(spent.requests) == 1
    assert len(other.requests) == 2
