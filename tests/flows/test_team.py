"""Submitted instances: queued in the store first, leased by a flow run, never lost between the two.

The two-worker run on a real Prefect server is ``tests/team``; these pin the
pieces: leases on queued instances, the flow a worker runs, how a stranded
instance is told from one still waiting, and submission's refusals.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import Session, col

from flows.batch import BatchItem
from flows.instances import ReplayRefused, replay
from flows.recovery import THIS_WORKER, find_lost, recover
from flows.registry import WORKFLOWS, load_workflow_modules
from flows.runtime import Runtime
from flows.team import _stranded_because, queued_flow, submit
from steps.errors import ConfigError, InputError
from storage.models import WorkflowInstance
from tests.flows.helpers import INPUT
from tests.flows.pipeline import PIPELINE
from tests.servers import OpenAIServer

pytestmark = pytest.mark.usefixtures("prefect_harness")

DEAD = "localhost-test:999999:abcdef"
"""A worker on another host: judged by its lease alone."""


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WORKFLOWS, PIPELINE.name, PIPELINE)


def queue(runtime: Runtime, count: int) -> list[str]:
    made = runtime.store.create_queued(
        PIPELINE.name, [(INPUT, f"in.jsonl:{n}", None) for n in range(count)], "ana"
    )
    return [instance.id for instance in made]


def test_a_worker_runs_its_queued_instances_and_leaves_others_alone(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    ids = queue(runtime, 3)
    assert list(runtime.store.lease_queued(ids[2:], "elsewhere:1:aaaaaa")) == ids[2:]  # another worker's

    counts = queued_flow(instance_ids=ids, concurrency=2)

    assert counts == {"completed": 2, "not_held": 1}
    statuses = [runtime.store.get_instance(i).status for i in ids]  # type: ignore[union-attr]
    assert statuses == ["completed", "completed", "queued"]
    assert len(openai_server.requests) == 4  # two steps each, nothing for the held one


def test_a_dead_workers_leased_queue_is_recovered_and_replayed_from_the_start(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    (waiting,) = queue(runtime, 1)
    assert list(runtime.store.lease_queued([waiting], DEAD)) == [waiting]
    assert runtime.store.lease_queued([waiting], THIS_WORKER) == {}  # one lease at a time
    with pytest.raises(ReplayRefused, match="is queued by localhost-test:999999"):
        replay(waiting, runtime)  # its worker may still be alive

    assert [item.instance.id for item in find_lost(runtime.store, runtime.settings)] == []  # not yet
    with Session(runtime.store.engine) as session:  # its worker stopped renewing a lease ago
        session.execute(
            update(WorkflowInstance)
            .where(col(WorkflowInstance.id) == waiting)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=runtime.settings.workers.lease_s + 5))
        )
        session.commit()
    (item,) = find_lost(runtime.store, runtime.settings)
    assert recover(runtime.store, runtime.settings, item)
    paused = runtime.store.get_instance(waiting)
    assert paused is not None
    assert (paused.status, paused.failure_class) == ("paused", "worker_lost")
    assert paused.error is not None
    assert "runs it from the start" in paused.error

    result = replay(waiting, runtime)
    assert result.status.value == "completed"
    assert len(openai_server.requests) == 2


def instance(flow_run_id: str | None, age_s: float) -> WorkflowInstance:
    return WorkflowInstance(
        workflow="w",
        input={},
        owner="ana",
        status="queued",
        flow_run_id=flow_run_id,
        created_at=datetime.now(UTC) - timedelta(seconds=age_s),
    )


@pytest.mark.parametrize(
    ("state", "since_s", "stranded"),
    [
        ("SCHEDULED", 600, None),  # waiting for a free worker: another one will take it
        ("PAUSED", 600, None),
        ("RUNNING", 5, None),  # just started: it leases its instances within seconds
        ("PENDING", 5, None),
        ("RUNNING", 120, "has been running for 120 s without taking it"),
        ("PENDING", 120, "has been pending for 120 s"),
        ("CRASHED", 1, "ended (crashed) without starting it"),
        ("COMPLETED", 1, "ended (completed)"),
        (None, 0, "no longer exists in Prefect"),
    ],
)
def test_a_queued_instance_is_stranded_only_when_its_flow_run_cannot_start_it(
    state: str | None, since_s: float, stranded: str | None
) -> None:
    now = datetime.now(UTC)
    run = str(uuid.uuid4())
    runs = {} if state is None else {run: (state, now - timedelta(seconds=since_s))}
    reason = _stranded_because(instance(run, 600), runs, now, lease_s=60)
    if stranded is None:
        assert reason is None
    else:
        assert reason is not None
        assert stranded in reason


def test_a_submission_that_never_got_a_flow_run_is_stranded_after_the_lease() -> None:
    now = datetime.now(UTC)
    assert _stranded_because(instance(None, 10), {}, now, lease_s=60) is None
    reason = _stranded_because(instance(None, 90), {}, now, lease_s=60)
    assert reason is not None
    assert "no flow run was created" in reason


def test_submit_refuses_an_unknown_deployment_before_writing_anything(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    items = [BatchItem("a.json", INPUT), BatchItem("b.json", {"txt": "typo"})]
    with pytest.raises(InputError, match=r"no deployment 'stepline-queued/nowhere'.*prefect deploy --all"):
        submit(PIPELINE, items, runtime, deployment="stepline-queued/nowhere")
    assert runtime.store.list_instances() == []


def test_a_workflow_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(ConfigError, match=r"workflow_modules: cannot import 'acme\.nowhere'"):
        load_workflow_modules(("acme.nowhere",))
