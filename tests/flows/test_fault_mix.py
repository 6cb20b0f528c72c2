"""A storm of mixed faults over many concurrent instances: none lost, none stuck."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from flows.instances import run_workflow
from flows.registry import WORKFLOWS
from flows.runtime import Runtime
from storage.models import Attempt, StepRun
from tests.flows.helpers import INPUT
from tests.flows.pipeline import pipeline
from tests.servers import OpenAIServer, Reply, error, invalid_json, ok, reset, slow

pytestmark = pytest.mark.usefixtures("prefect_harness")

INSTANCES = 320
WORKERS = 8
FAULT_RATE = 0.3

FAULTS: dict[str, Callable[[], Reply]] = {
    "429": lambda: error(429, retry_after=0.05),
    "500": lambda: error(500),
    "503": lambda: error(503),
    "529": lambda: error(529),
    "timeout": lambda: slow(1.0, ok({})),  # past the 0.5 s client timeout
    "reset": reset,
    "invalid_json": lambda: invalid_json('{"vendor": "Ac'),
}


def storm(seed: int, injected: Counter[str]) -> Callable[[dict[str, Any]], Reply]:
    """30% of requests fail with a random fault; the rest get a valid answer for their tool."""
    rng = random.Random(seed)
    lock = threading.Lock()
    kinds = sorted(FAULTS)

    def reply(body: dict[str, Any]) -> Reply:
        with lock:
            faulty = rng.random() < FAULT_RATE
            kind = rng.choice(kinds)
            injected[kind if faulty else "ok"] += 1
        if faulty:
            return FAULTS[kind]()
        name = body["tools"][0]["function"]["name"]
        good = (
            {"vendor": "Acme", "total": 10.0, "currency": "EUR"} if name == "Invoice" else {"label": "goods"}
        )
        return ok(good)

    return reply


def test_fault_storm_ends_every_instance_in_a_known_state(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    report: Callable[[str], None],
) -> None:
    workflow = pipeline("gpt-flaky", name="file-invoice-storm")
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    injected: Counter[str] = Counter()
    openai_server.default = storm(seed=1234, injected=injected)
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

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    elapsed = time.perf_counter() - started

    instances = runtime.store.list_instances(workflow=workflow.name, limit=10_000)
    statuses = Counter(i.status for i in instances)
    with Session(runtime.store.engine) as session:
        classes = Counter(
            dict(
                session.exec(
                    select(Attempt.failure_class, func.count()).group_by(Attempt.failure_class)
                ).all()
            )
        )
        unfinished_attempts = session.exec(
            select(func.count()).select_from(Attempt).where(col(Attempt.finished_at).is_(None))
        ).one()
        unfinished_runs = session.exec(
            select(func.count()).select_from(StepRun).where(StepRun.status == "running")
        ).one()
    reviews = [r for r in runtime.store.list_reviews(status=None, limit=100_000)]
    faults = sum(n for kind, n in injected.items() if kind != "ok")
    report(
        f"fault storm: {INSTANCES} instances x 2 steps, {WORKERS} at a time, {elapsed:.0f} s; "
        f"{len(openai_server.requests)} requests, {faults} faults injected "
        f"({faults / max(1, len(openai_server.requests)):.0%}): "
        + ", ".join(f"{k} {v}" for k, v in sorted(injected.items()) if k != "ok")
    )
    report(
        "  attempts recorded by class: "
        + ", ".join(f"{k or 'ok'} {v}" for k, v in sorted(classes.items(), key=lambda kv: kv[0] or ""))
    )
    report(
        "  instances: "
        + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        + f"; lost {INSTANCES - len(instances)}, stuck running {statuses['running']}, "
        f"review items {len(reviews)}, crashed {len(crashed)}"
    )
    assert crashed == [], [f"{type(c).__name__}: {c}" for c in crashed]
    assert len(instances) == INSTANCES  # none lost
    assert set(statuses) <= {"completed", "needs_review", "paused"}  # none stuck running
    assert unfinished_attempts == 0
    assert unfinished_runs == 0
    assert statuses["completed"] > INSTANCES // 2
    # Every request that reached the server is an attempt row, and no row is duplicated.
    assert sum(classes.values()) == len(openai_server.requests)
    for instance in instances:
        detail = runtime.store.instance_detail(instance.id)
        assert detail is not None
        keys = [(a.step_run_id, a.attempt_number) for a in detail.attempts]
        assert len(keys) == len(set(keys))
    review_instances = {r.instance_id for r in reviews}
    assert review_instances == {i.id for i in instances if i.status == "needs_review"}
