"""Secrets stay in the environment: never in the database, never in logs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.instances import run_workflow
from flows.runtime import Runtime
from tests.conftest import TEST_KEYS
from tests.flows.helpers import INPUT, VALID, invoice_workflow
from tests.servers import AnthropicServer, OpenAIServer, error, invalid_json, ok

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_api_keys_never_reach_the_database_or_logs(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    openai_server.enqueue(invalid_json("{nope"), ok(VALID), error(401))
    anthropic_server.enqueue(ok(VALID), error(429, retry_after=1))
    runtime = make_runtime()
    for model in ("gpt-test", "gpt-test", "claude-test", "claude-test"):
        run_workflow(invoice_workflow(model), INPUT, runtime)
    runtime.close()

    # The keys really were used: the servers saw them.
    seen = " ".join(
        r.headers.get("authorization", "") for r in openai_server.requests + anthropic_server.requests
    )
    for key in TEST_KEYS.values():
        assert key in seen
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("stepline.db*"))
    assert stored  # the database (and its WAL) exist and hold the attempts
    logs = caplog.text
    for key in TEST_KEYS.values():
        assert key.encode() not in stored
        assert key not in logs


def test_steps_run_as_prefect_tasks_named_after_the_step(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    openai_server.default = ok(VALID)
    runtime = make_runtime()
    result = run_workflow(invoice_workflow("gpt-test"), INPUT, runtime)
    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    assert detail.instance.flow_run_id

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(detail.instance.flow_run_id))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert flow_run.state is not None
    assert flow_run.state.is_completed()
    assert [t.name.rsplit("-", 1)[0] for t in tasks] == ["extract-invoice"]
