"""Client-side limits are shared by every caller of a model in the process."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest

from flows.instances import run_workflow
from flows.runtime import Runtime
from storage.models import InstanceStatus
from tests.flows.helpers import INPUT, VALID, invoice_workflow
from tests.servers import OpenAIServer, error, ok, slow

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run_in_threads(count: int, work: Callable[[], object]) -> list[object]:
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(work())) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_one_429_makes_every_caller_of_the_model_wait(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    workflow = invoice_workflow("gpt-test")
    openai_server.enqueue(error(429, retry_after=0.8))
    first = threading.Thread(target=lambda: run_workflow(workflow, INPUT, runtime))
    first.start()
    (rate_limited,) = openai_server.wait_for_requests(1)

    other = run_workflow(workflow, INPUT, runtime)  # a different caller, after the 429
    first.join(timeout=30)

    assert other.status is InstanceStatus.COMPLETED
    later = openai_server.requests[1:]
    assert len(later) == 2
    assert all(r.monotonic - rate_limited.monotonic >= 0.8 - 0.02 for r in later)


def test_requests_per_minute_and_concurrency_hold_across_instances(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    workflow = invoice_workflow("gpt-limited")  # rpm = 600 -> one request per 0.1 s; 2 at once
    openai_server.default = slow(0.25, ok(VALID))
    results = run_in_threads(5, lambda: run_workflow(workflow, INPUT, runtime))

    assert all(r.status is InstanceStatus.COMPLETED for r in results)  # type: ignore[attr-defined]
    times = sorted(r.monotonic for r in openai_server.requests)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.1 - 0.02
    # With 2 slots and 0.25 s per answer, 5 calls cannot all start within 0.4 s.
    assert times[-1] - times[0] >= 0.45
