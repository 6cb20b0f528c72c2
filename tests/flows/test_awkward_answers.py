"""A model's answer holding NUL or an unpaired surrogate is stored as received, on both databases.

PostgreSQL refuses NUL in text and jsonb. Before ``storage.escaping`` such an answer paused the
instance as ``storage`` and was lost. An unpaired surrogate (``\\ud800``) never gets past
pydantic's JSON parser, from either provider, so it reaches storage only as text; the store's own
tests (tests/storage/test_escaping.py) write one into every column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flows.instances import run_workflow
from flows.runtime import Runtime
from storage.models import InstanceStatus
from tests.databases import database_url
from tests.flows.helpers import INPUT, VALID, invoice_workflow
from tests.servers import OpenAIServer, invalid_json, ok

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as found:
        yield found


def test_nul_and_surrogates_in_answers_are_kept_exactly(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, url: str
) -> None:
    raw_nul = '{"vendor": "Ac\x00me", "total": 120.5, "currency": "EUR"}'  # a raw NUL: not JSON
    escaped = '{"vendor": "Ac\\u0000me \\\\u0000", "total": 120.5, "currency": "EUR"}'
    openai_server.enqueue(invalid_json(raw_nul), ok(escaped))
    runtime = make_runtime(url)

    result = run_workflow(invoice_workflow("gpt-test", max_reasks=2), INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED, result
    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    first, second = detail.attempts
    assert first.failure_class == "schema_invalid"
    assert first.raw_output == raw_nul
    assert first.raw_response is not None
    assert (
        "\x00"
        in json.loads(first.raw_response)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    )
    assert second.raw_output == escaped  # the six characters \u0000 stay six characters
    expected = {**VALID, "vendor": "Ac\x00me \\u0000"}
    assert second.parsed_output == expected
    assert detail.instance.output == expected
    assert detail.step_runs[0].output == expected


def test_an_unpaired_surrogate_is_refused_as_json_and_kept_as_received(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, url: str
) -> None:
    """Pydantic's JSON parser refuses ``\\ud800``: the answer goes to review, stored as it came."""
    answer = '{"vendor": "Ac\\ud800me", "total": 120.5, "currency": "EUR"}'
    openai_server.default = ok(answer)
    runtime = make_runtime(url)

    result = run_workflow(invoice_workflow("gpt-test", max_reasks=0), INPUT, runtime)

    assert (result.status, result.failure_class) == (InstanceStatus.NEEDS_REVIEW, "schema_invalid")
    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    (attempt,) = detail.attempts
    assert attempt.raw_output == answer
