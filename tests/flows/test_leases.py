"""Leases: a dead worker's instance is recovered once; a live (or only slow) one keeps it."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import Session

from flows.instances import ReplayRefused, replay, run_workflow
from flows.recovery import THIS_WORKER, Heartbeat, find_lost, recover
from flows.registry import WORKFLOWS
from flows.runtime import Runtime
from storage.models import WorkflowInstance
from tests.flows.helpers import INPUT
from tests.flows.pipeline import PIPELINE
from tests.servers import OpenAIServer

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WORKFLOWS, PIPELINE.name, PIPELINE)


def left_running(runtime: Runtime, worker: str, beat_age_s: float) -> str:
    """An instance as a worker leaves it: running, last renewed ``beat_age_s`` ago."""
    instance = runtime.store.create_instance(PIPELINE.name, INPUT, "ana", worker=worker)
    with Session(runtime.store.engine) as session:
        session.execute(
            update(WorkflowInstance)
            .where(WorkflowInstance.id == instance.id)  # type: ignore[arg-type]
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=beat_age_s))
        )
        session.commit()
    return instance.id


def test_a_worker_on_another_host_is_lost_only_when_its_lease_expires(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    lease = runtime.settings.workers.lease_s
    fresh = left_running(runtime, "elsewhere:4242:abcdef", beat_age_s=lease / 2)
    stale = left_running(runtime, "elsewhere:4343:abcdef", beat_age_s=lease + 5)

    with pytest.raises(ReplayRefused, match="being run right now by elsewhere:4242"):
        replay(fresh, runtime)
    assert [lost.instance.id for lost in find_lost(runtime.store, runtime.settings)] == [stale]

    result = replay(stale, runtime)  # recovers it, then resumes it

    assert result.status.value == "completed"
    assert runtime.store.get_instance(fresh).status == "running"  # type: ignore[union-attr]
    notified = runtime.store.notifications(stale)
    assert notified == []  # no [notify] targets configured: nothing sent, nothing faked


def test_a_process_gone_from_this_host_is_lost_at_once(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    alive = left_running(runtime, f"{socket.gethostname()}:{os.getppid()}:abcdef", beat_age_s=1)
    gone = left_running(runtime, f"{socket.gethostname()}:{2**22 + 7}:abcdef", beat_age_s=1)

    lost = find_lost(runtime.store, runtime.settings)

    assert [item.instance.id for item in lost] == [gone]
    assert "no longer exists on this host" in lost[0].reason
    assert alive not in {item.instance.id for item in lost}


def test_a_slow_worker_that_renews_its_lease_keeps_its_instance(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    instance_id = left_running(runtime, THIS_WORKER, beat_age_s=3600)
    (judged,) = [
        item for item in find_lost(runtime.store, runtime.settings) if item.instance.id == instance_id
    ]
    heartbeat = Heartbeat(runtime.store, interval_s=60)
    heartbeat.hold(instance_id, judged.instance.fence)
    try:
        assert heartbeat.beat() == 1  # the worker was only slow: it renews before the recovery lands
        assert recover(runtime.store, runtime.settings, judged) is False
    finally:
        heartbeat.stop()
    assert runtime.store.get_instance(instance_id).status == "running"  # type: ignore[union-attr]


def test_concurrent_recoveries_act_once(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    instance_id = left_running(runtime, "elsewhere:1:abcdef", beat_age_s=3600)
    (judged,) = find_lost(runtime.store, runtime.settings)
    outcomes: list[bool] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(recover(runtime.store, runtime.settings, judged)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [False, False, False, True]
    instance = runtime.store.get_instance(instance_id)
    assert instance is not None
    assert (instance.status, instance.failure_class) == ("paused", "worker_lost")


def test_a_running_instance_renews_its_lease(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.servers import slow

    runtime = make_runtime()
    runtime.heartbeat.interval_s = 0.2
    openai_server.default = lambda body: slow(1.0, openai_server.auto_reply(body))
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(run_workflow(PIPELINE, INPUT, runtime)))
    worker.start()
    openai_server.wait_for_requests(1, timeout=60)
    (instance,) = runtime.store.running_instances()
    first = instance.heartbeat_at
    openai_server.wait_for_requests(2, timeout=60)
    (instance,) = runtime.store.running_instances()
    worker.join(timeout=60)
    assert first is not None
    assert instance.heartbeat_at is not None
    assert instance.heartbeat_at > first
    assert instance.worker == runtime.worker == THIS_WORKER
    assert results[0].status.value == "completed"


def test_an_attempt_that_cannot_be_recorded_is_never_sent(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, tmp_path: Path
) -> None:
    """Instructor swallows errors raised in its hooks; the request must still not leave unrecorded."""
    runtime = make_runtime()
    with closing(sqlite3.connect(tmp_path / "stepline.db")) as conn:  # every new attempt row fails
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON attempt "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full (injected)'); END"
        )
        conn.commit()

    result = run_workflow(PIPELINE, INPUT, runtime)

    assert openai_server.requests == []  # asserted at the wire: nothing was sent
    assert (result.status.value, result.failure_class) == ("paused", "storage")
    assert "could not be recorded, so it was not sent" in (result.error or "")
    assert "database or disk is full (injected)" in (result.error or "")
    assert "[SQL:" not in (result.error or "")
    assert "parameters" not in (result.error or "")
    (instance,) = runtime.store.list_instances()
    stopped = (instance.status, instance.failure_class, instance.failed_step)
    assert stopped == ("paused", "storage", "extract-invoice")
