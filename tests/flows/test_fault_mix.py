"""A storm of mixed faults over many concurrent instances: none lost, none stuck."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from flows.engine import Runtime
from flows.instances import run_workflow
from flows.registry import WORKFLOWS
from tests.flows.helpers import INPUT
from tests.flows.pipeline import pipeline
from tests.servers import OpenAIServer, Reply, error, invalid_json, ok, reset, slow

pytestmark = pytest.mark.usefixtures("prefect_harness")

INSTANCES = 60
FAULT_RATE = 0.3


def storm(seed: int) -> Callable[[dict[str, Any]], Reply]:
    """30% of requests fail with a random fault; the rest get a valid answer for their tool."""
    rng = random.Random(seed)
    lock = threading.Lock()
    faults: list[Callable[[], Reply]] = [
        lambda: error(429, retry_after=0.05),
        lambda: error(500),
        lambda: error(503),
        lambda: error(529),
        lambda: slow(1.0, ok({})),  # past the 0.5 s client timeout
        reset,
        lambda: invalid_json('{"vendor": "Ac'),
    ]

    def reply(body: dict[str, Any]) -> Reply:
        with lock:
            faulty = rng.random() < FAULT_RATE
            fault = rng.choice(faults)
        if faulty:
            return fault()
        name = body["tools"][0]["function"]["name"]
        good = (
            {"vendor": "Acme", "total": 10.0, "currency": "EUR"} if name == "Invoice" else {"label": "goods"}
        )
        return ok(good)

    return reply


def test_fault_storm_ends_every_instance_in_a_known_state(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = pipeline("gpt-flaky", name="file-invoice-storm")
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    openai_server.default = storm(seed=1234)
    runtime = make_runtime()

    queue = list(range(INSTANCES))
    lock = threading.Lock()
    crashed: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                queue.pop()
            try:
                run_workflow(workflow, INPUT, runtime)
            except BaseException as exc:
                crashed.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)

    instances = runtime.store.list_instances(workflow=workflow.name, limit=10_000)
    statuses = Counter(i.status for i in instances)
    attempts = runtime.store.count_attempts()
    print(
        f"\nfault storm: {INSTANCES} instances, {len(openai_server.requests)} requests, "
        f"{attempts} attempts recorded: {dict(statuses)}"
    )
    assert crashed == []
    assert len(instances) == INSTANCES  # none lost
    assert set(statuses) <= {"completed", "needs_review", "paused"}  # none stuck running
    assert statuses["completed"] > INSTANCES // 2
    # Every request that reached the server is an attempt row, and no row is duplicated.
    assert attempts == len(openai_server.requests)
    for instance in instances:
        detail = runtime.store.instance_detail(instance.id)
        assert detail is not None
        keys = [(a.step_run_id, a.attempt_number) for a in detail.attempts]
        assert len(keys) == len(set(keys))
        if instance.status == "needs_review":
            assert any(r.instance_id == instance.id for r in runtime.store.list_reviews())
