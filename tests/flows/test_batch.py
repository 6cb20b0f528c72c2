"""Batches: many inputs at once, each item standing alone, stoppable without losing anything."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.batch import MAX_ITEM_BYTES, ItemOutcome, read_items, run_batch
from flows.instances import replay
from flows.registry import WORKFLOWS
from flows.runtime import Runtime
from steps.errors import InputError
from tests.flows.helpers import INPUT, VALID
from tests.flows.pipeline import PIPELINE, tool_of
from tests.flows.test_schedules import wait_until
from tests.servers import OpenAIServer, Reply, error, invalid_json, ok, slow

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WORKFLOWS, PIPELINE.name, PIPELINE)


def inbox(folder: Path, count: int) -> Path:
    folder.mkdir(exist_ok=True)
    for n in range(count):
        (folder / f"invoice-{n:02}.json").write_text(json.dumps({"text": f"ACME invoice {n}: EUR {n}.00"}))
    return folder


def test_a_folder_reads_each_file_and_jsonl_line_and_flags_the_bad_ones(tmp_path: Path) -> None:
    folder = inbox(tmp_path / "in", 2)
    (folder / "notes.txt").write_text("call the vendor back")
    (folder / "huge.json").write_text(json.dumps({"text": "x" * (MAX_ITEM_BYTES + 1)}))
    (folder / "latin1.json").write_bytes(b'{"text": "caf\xe9"}')
    (folder / "more.jsonl").write_text('{"text": "a"}\n\n{"text": \n')
    (folder / ".hidden.json").write_text("{}")
    (folder / "done").mkdir()
    (folder / "done" / "old.json").write_text("{}")

    items = {item.source.removeprefix(f"{folder}/"): item for item in read_items(folder)}

    assert sorted(items) == [
        "huge.json",
        "invoice-00.json",
        "invoice-01.json",
        "latin1.json",
        "more.jsonl:1",
        "more.jsonl:3",
        "notes.txt",
    ]
    assert items["invoice-00.json"].payload == {"text": "ACME invoice 0: EUR 0.00"}
    assert items["invoice-00.json"].error is None
    assert items["notes.txt"].error == (
        f"file {folder}/notes.txt is not valid JSON: Expecting value at line 1 column 1"
    )
    assert items["huge.json"].error is not None
    assert "is 1.0 MiB; one input may be at most 1 MiB: trim it or split it" in items["huge.json"].error
    assert items["huge.json"].payload is None  # never read into memory
    assert "is not UTF-8 text" in (items["latin1.json"].error or "")
    assert items["more.jsonl:1"].payload == {"text": "a"}
    assert (items["more.jsonl:3"].error or "").startswith(f"line 3 of {folder}/more.jsonl is not valid JSON")
    # The same bytes give the same digest: what a watched folder remembers.
    assert items["invoice-00.json"].digest != items["invoice-01.json"].digest
    assert read_items(folder)[0].digest == read_items(folder)[0].digest


def test_a_missing_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist; pass a folder of JSON files or a JSONL file"):
        read_items(tmp_path / "nope.jsonl")


def test_a_batch_runs_every_good_item_and_reports_each_bad_one(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, tmp_path: Path
) -> None:
    folder = inbox(tmp_path / "in", 4)
    (folder / "broken.json").write_text('{"text": ')
    (folder / "wrong-shape.json").write_text('{"body": "no text field"}')
    runtime = make_runtime()
    seen: list[ItemOutcome] = []

    report = run_batch(PIPELINE, read_items(folder), runtime, concurrency=3, on_outcome=seen.append)

    assert report.counts() == {"completed": 4, "rejected": 2}
    assert len(seen) == 6  # every outcome reported live, as it happened
    rejected = {o.item.source.rsplit("/", 1)[1]: o.message for o in report.needing_attention()}
    assert "is not valid JSON" in (rejected["broken.json"] or "")
    assert "text: Field required" in (rejected["wrong-shape.json"] or "")
    instances = runtime.store.list_instances(workflow=PIPELINE.name)
    assert len(instances) == 4  # bad items never became instances
    assert {i.status for i in instances} == {"completed"}
    assert sorted(Path(i.source or "").name for i in instances) == [f"invoice-0{n}.json" for n in range(4)]
    assert len(openai_server.requests) == 8  # two steps each

    again = run_batch(PIPELINE, read_items(folder), runtime, skip_seen=True)
    assert again.counts() == {"skipped": 4, "rejected": 2}
    assert len(openai_server.requests) == 8  # nothing ran twice


def test_a_batch_is_one_flow_run_whose_task_runs_are_each_instances_steps(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, tmp_path: Path
) -> None:
    """One flow run per batch (Prefect creates a few hundred flow runs a minute at most here);
    every step still a task run of it, named after the step and its instance."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def reply(body: dict[str, Any]) -> Reply:
        return ok(VALID) if tool_of(body) == "Invoice" else ok({"label": "goods"})

    openai_server.default = reply
    runtime = make_runtime()
    report = run_batch(PIPELINE, read_items(inbox(tmp_path / "in", 3)), runtime, concurrency=3)

    assert report.counts() == {"completed": 3}
    instances = runtime.store.list_instances(workflow=PIPELINE.name)
    (flow_run_id,) = {i.flow_run_id for i in instances}
    assert flow_run_id is not None
    steps = [step.name for step in PIPELINE.steps]
    expected = sorted(f"{s}-{i.id[:8]}" for s in steps for i in instances)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
        flow = client.read_flow(flow_run.flow_id)
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))

        def all_completed() -> bool:
            # Task runs reach Prefect's server as events, recorded a moment after they happen.
            tasks = client.read_task_runs(flow_run_filter=runs)
            done = [t.name for t in tasks if t.state is not None and t.state.is_completed()]
            return sorted(done) == expected

        wait_until(all_completed, timeout=30, what="the batch's task runs to be recorded as completed")
    assert flow.name == "stepline-run"
    assert flow_run.name == f"{PIPELINE.name} x3"
    assert flow_run.state is not None
    assert flow_run.state.is_completed()

    # Asked for, each instance is a flow run of its own again.
    run_batch(PIPELINE, read_items(inbox(tmp_path / "more", 2)), runtime, one_flow_run=False)
    later = runtime.store.list_instances(workflow=PIPELINE.name)[:2]
    assert len({i.flow_run_id for i in later} - {flow_run_id}) == 2


def test_stopped_and_failed_instances_are_listed_with_what_to_do(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, tmp_path: Path
) -> None:
    lines = [json.dumps({"text": f"invoice {n}"}) for n in range(3)]
    (tmp_path / "batch.jsonl").write_text("\n".join(lines) + "\n")

    def reply(body: dict[str, Any]) -> Reply:
        text = json.dumps(body["messages"])
        if "invoice 1" in text:
            return invalid_json("{nope")
        if "invoice 2" in text:
            return error(401)
        return ok(VALID) if tool_of(body) == "Invoice" else ok({"label": "goods"})

    openai_server.default = reply
    report = run_batch(PIPELINE, read_items(tmp_path / "batch.jsonl"), make_runtime(), concurrency=2)

    by_line = {o.item.source.rsplit(":", 1)[1]: o for o in report.outcomes}
    assert by_line["1"].status == "completed"
    assert by_line["2"].status == "needs_review"
    assert by_line["2"].review_id is not None
    assert by_line["3"].status == "paused"
    assert by_line["3"].failure_class == "auth"
    attention = {o.item.source for o in report.needing_attention()}
    assert attention == {by_line["2"].item.source, by_line["3"].item.source}


def test_stopping_a_batch_pauses_running_instances_before_their_next_step_and_replay_resumes(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, tmp_path: Path
) -> None:
    folder = inbox(tmp_path / "in", 5)

    def reply(body: dict[str, Any]) -> Reply:
        return slow(0.3, ok(VALID)) if tool_of(body) == "Invoice" else ok({"label": "goods"})

    openai_server.default = reply
    runtime = make_runtime()
    cancel = threading.Event()

    # Stop as soon as the first model call is under way (as Ctrl-C would).
    def stop_on_first_call() -> None:
        openai_server.wait_for_requests(1, timeout=60)
        cancel.set()

    stopper = threading.Thread(target=stop_on_first_call)
    stopper.start()

    report = run_batch(PIPELINE, read_items(folder), runtime, concurrency=2, cancel=cancel)
    stopper.join()

    assert report.interrupted
    assert report.counts() == {"paused": 2, "not_started": 3}
    paused = [o for o in report.outcomes if o.status == "paused"]
    assert {o.failure_class for o in paused} == {"interrupted"}
    assert "categorize" in {o.failed_step for o in paused}  # the call under way finished and was kept
    assert len(runtime.store.list_instances(workflow=PIPELINE.name)) == 2  # the rest never started
    assert "Category" not in [tool_of(r.body) for r in openai_server.requests]

    openai_server.default = None  # minimal valid answers from now on
    for outcome in paused:
        assert outcome.instance_id is not None
        assert replay(outcome.instance_id, runtime).status.value == "completed"
    # Each step of each instance was asked for exactly once, across the stop and the replays.
    asked = sorted(tool_of(r.body) for r in openai_server.requests)
    assert asked == ["Category", "Category", "Invoice", "Invoice"]


def test_a_catalog_that_cannot_route_the_workflow_fails_the_batch_before_any_instance(
    make_runtime: Callable[..., Runtime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.flows.pipeline import pipeline

    unroutable = pipeline("no-such-model", name="file-invoice-unroutable")
    monkeypatch.setitem(WORKFLOWS, unroutable.name, unroutable)
    runtime = make_runtime()
    with pytest.raises(Exception, match="no-such-model"):
        run_batch(unroutable, read_items(inbox(tmp_path / "in", 2)), runtime)
    assert runtime.store.list_instances() == []


def test_an_input_that_became_an_instance_is_recorded_with_its_source(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    (tmp_path / "one.jsonl").write_text(json.dumps(INPUT) + "\n")
    runtime = make_runtime()
    report = run_batch(PIPELINE, read_items(tmp_path / "one.jsonl"), runtime)
    (outcome,) = report.outcomes
    instance = runtime.store.get_instance(outcome.instance_id or "")
    assert instance is not None
    assert instance.source == f"{tmp_path}/one.jsonl:1"
    assert instance.source_digest == outcome.item.digest
