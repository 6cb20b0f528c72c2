"""Limits held on the Prefect server bind two workers together; local limits do not.

Each Runtime is what one worker holds: its own provider pool and gates. The
two below share nothing but the Prefect API (and the database).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable

import pytest

from flows.instances import RunResult, run_workflow
from flows.runtime import Runtime
from flows.shared_limits import limit_names
from storage.models import InstanceStatus
from tests.flows.helpers import INPUT, VALID, invoice_workflow
from tests.servers import OpenAIServer, Reply, ok, slow

pytestmark = pytest.mark.usefixtures("prefect_harness")

SPACING_S = 0.1  # gpt-limited: rpm = 600, max_concurrency = 2
CALL_S = 0.3


def two_workers(
    make_runtime: Callable[..., Runtime], per_worker: int, model: str = "gpt-limited"
) -> list[RunResult]:
    workflow = invoice_workflow(model)
    workers = [make_runtime(), make_runtime()]
    assert workers[0].executor.pool is not workers[1].executor.pool
    results: list[RunResult] = []

    def work(runtime: Runtime) -> None:
        results.append(run_workflow(workflow, INPUT, runtime))

    threads = [threading.Thread(target=work, args=(rt,)) for rt in workers for _ in range(per_worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def most_in_flight(starts: list[float], call_s: float = CALL_S) -> int:
    """Requests started within one call's duration of each other: how many ran at once."""
    return max(sum(1 for t in starts if s <= t < s + call_s - 0.02) for s in starts)


def test_shared_limits_hold_across_two_workers(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLINE_SHARED_LIMITS", "true")
    openai_server.default = slow(CALL_S, ok(VALID))

    results = two_workers(make_runtime, per_worker=4)

    assert [r.status for r in results] == [InstanceStatus.COMPLETED] * 8
    starts = sorted(r.monotonic for r in openai_server.requests)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= SPACING_S - 0.03  # one rpm for both workers
    assert most_in_flight(starts) <= 2  # one concurrency cap for both workers

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        rpm = client.read_global_concurrency_limit_by_name(limit_names("gpt-limited")["rpm"])
        cap = client.read_global_concurrency_limit_by_name(limit_names("gpt-limited")["concurrent"])
    assert rpm.limit == 1
    assert rpm.slot_decay_per_second == pytest.approx(10.0)
    assert cap.limit == 2


def test_without_shared_limits_each_worker_counts_alone(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    """The contrast that makes the test above mean something.

    The server holds each request until a third is in flight (or 20 s pass):
    Prefect starts the two workers' flows one after another, seconds apart on a
    busy machine, so fixed-length calls could end before the other worker's
    begin. With local limits only, a third request does arrive while two wait.
    """
    arrived = threading.Condition()
    waiting = 0
    most_waiting = 0

    def hold_until_three(body: dict[str, object]) -> Reply:
        nonlocal waiting, most_waiting
        with arrived:
            waiting += 1
            most_waiting = max(most_waiting, waiting)
            arrived.notify_all()
            arrived.wait_for(lambda: most_waiting >= 3, timeout=20)
            waiting -= 1
        return ok(VALID)

    openai_server.default = hold_until_three

    # The same limits as gpt-limited, on a client that waits 30 s rather than 2 s.
    results = two_workers(make_runtime, per_worker=4, model="gpt-limited-patient")

    assert [r.status for r in results] == [InstanceStatus.COMPLETED] * 8
    assert most_waiting > 2  # more than one worker's cap of 2 in flight at once


def test_workers_starting_together_create_each_limit_once(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two flow runs that open at once both upsert the limits: neither may fail on the other's."""
    from prefect.client.orchestration import get_client

    from flows.shared_limits import ensure_shared_limits

    settings = make_runtime().settings
    model = settings.models["gpt-limited"]
    renamed = {f"gpt-race-{uuid.uuid4().hex[:8]}": model for _ in range(3)}
    racing = settings.model_copy(update={"models": renamed})
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_worker() -> None:
        start.wait()
        try:
            ensure_shared_limits(racing)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    wanted = {name for model_id in renamed for name in limit_names(model_id).values() if "tpm" not in name}
    with get_client(sync_client=True) as client:  # names are unique on the server
        found = {name: client.read_global_concurrency_limit_by_name(name) for name in wanted}
    assert {name: limit.limit for name, limit in found.items()} == {
        name: (1 if name.endswith("-rpm") else model.max_concurrency) for name in wanted
    }
