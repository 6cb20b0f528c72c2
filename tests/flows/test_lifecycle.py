"""Instances stop where a person can act, tell their owner, and resume without losing work."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flows.instances import ReplayRefused, ReviewError, approve_review, reject_review, replay, run_workflow
from flows.registry import WORKFLOWS
from flows.runtime import Runtime
from storage.models import InstanceStatus
from tests.flows.helpers import INPUT, VALID
from tests.flows.pipeline import PIPELINE, tool_of
from tests.receiver import Receiver, apprise_receiver, closed_port
from tests.servers import OpenAIServer, error, invalid_json, ok, slow

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WORKFLOWS, PIPELINE.name, PIPELINE)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with apprise_receiver() as found:
        yield found


def calls(server: OpenAIServer) -> list[str]:
    return [tool_of(r.body) for r in server.requests]


def test_schema_failure_goes_to_review_and_approval_resumes_after_it(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, receiver: Receiver
) -> None:
    openai_server.enqueue(invalid_json("{bad"), ok({"vendor": "Acme", "total": "lots", "currency": "EUR"}))
    runtime = make_runtime(notify_urls=(receiver.url,))

    stopped = run_workflow(PIPELINE, INPUT, runtime)

    assert stopped.status is InstanceStatus.NEEDS_REVIEW
    assert calls(openai_server) == ["Invoice", "Invoice"]  # never advanced to categorize
    (item,) = runtime.store.list_reviews()
    assert item.id == stopped.review_id
    assert item.step == "extract-invoice"
    assert item.raw_output == '{"vendor": "Acme", "total": "lots", "currency": "EUR"}'
    assert item.expected_schema["title"] == "Invoice"
    assert item.validation_errors[0]["path"] == "$.total"
    (message,) = receiver.messages
    assert "needs_review" in message["title"]
    assert stopped.instance_id in message["message"]
    (note,) = runtime.store.notifications(stopped.instance_id)
    assert note.delivered
    assert note.event == "needs_review"

    with pytest.raises(ReviewError, match=r"total: Input should be a valid number"):
        approve_review(item.id, {"vendor": "Acme", "total": "lots", "currency": "EUR"}, runtime, by="ana")
    assert runtime.store.get_review(item.id).status == "open"  # type: ignore[union-attr]

    resumed = approve_review(item.id, VALID, runtime, by="ana", note="read the PDF")

    assert resumed.status is InstanceStatus.COMPLETED
    assert resumed.output.invoice.model_dump() == VALID  # type: ignore[union-attr]
    assert calls(openai_server) == ["Invoice", "Invoice", "Category"]  # only the next step ran
    decided = runtime.store.get_review(item.id)
    assert decided is not None
    assert (decided.status, decided.decided_by) == ("approved", "ana")
    with pytest.raises(ReviewError, match="already approved"):
        approve_review(item.id, VALID, runtime, by="bob")


def test_rejecting_a_review_fails_the_instance(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.default = invalid_json("nope")
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.review_id is not None
    reject_review(stopped.review_id, runtime, by="ana", note="not an invoice")
    instance = runtime.store.get_instance(stopped.instance_id)
    assert instance is not None
    assert instance.status == "failed"
    assert instance.error == "rejected in review by ana: not an invoice"


def test_exhausted_retries_pause_and_notify_and_replay_skips_finished_steps(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, receiver: Receiver
) -> None:
    budget = 1 + 2  # first try + the catalog's retries for `unavailable`
    openai_server.enqueue(ok(VALID), *[error(503)] * budget)
    dead = f"json://127.0.0.1:{closed_port()}"
    runtime = make_runtime(notify_urls=(receiver.url, dead))

    stopped = run_workflow(PIPELINE, INPUT, runtime)

    assert (stopped.status, stopped.failed_step, stopped.failure_class) == (
        InstanceStatus.PAUSED,
        "categorize",
        "unavailable",
    )
    notes = runtime.store.notifications(stopped.instance_id)
    assert sorted(n.delivered for n in notes) == [False, True]
    (undelivered,) = [n for n in notes if not n.delivered]
    assert undelivered.error  # recorded, and the instance is still paused
    assert all(n.target.startswith("json://#") for n in notes)  # no host, port or token stored
    assert runtime.store.get_instance(stopped.instance_id).status == "paused"  # type: ignore[union-attr]
    assert len(receiver.messages) == 1
    assert "paused" in receiver.messages[0]["title"]

    before = len(openai_server.requests)
    resumed = replay(stopped.instance_id[:10], runtime)

    assert resumed.status is InstanceStatus.COMPLETED
    assert calls(openai_server)[before:] == ["Category"]  # the finished extract step was not called again
    detail = runtime.store.instance_detail(stopped.instance_id)
    assert detail is not None
    assert detail.instance.generation == 1
    assert [(r.step, r.generation, r.status) for r in detail.step_runs] == [
        ("extract-invoice", 0, "completed"),
        ("categorize", 0, "failed"),
        ("categorize", 1, "completed"),
    ]
    assert len(detail.attempts) == 1 + budget + 1  # every attempt, both runs, on the instance


def test_replay_from_a_named_step_redoes_it_and_what_follows(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    done = run_workflow(PIPELINE, INPUT, runtime)
    assert done.status is InstanceStatus.COMPLETED
    with pytest.raises(ReplayRefused, match="is completed; name a step with --from"):
        replay(done.instance_id, runtime)
    with pytest.raises(Exception, match="did you mean 'categorize'"):
        replay(done.instance_id, runtime, from_step="categorise")

    openai_server.clear()
    again = replay(done.instance_id, runtime, from_step="categorize")
    assert again.status is InstanceStatus.COMPLETED
    assert calls(openai_server) == ["Category"]

    openai_server.clear()
    replay(done.instance_id, runtime, from_step="extract-invoice")
    assert calls(openai_server) == ["Invoice", "Category"]


def test_concurrent_replays_of_one_instance_run_exactly_once(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(error(401))
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.status is InstanceStatus.PAUSED
    openai_server.enqueue(slow(1.0, ok(VALID)))

    outcomes: list[Any] = []

    def attempt() -> None:
        try:
            outcomes.append(replay(stopped.instance_id, runtime))
        except ReplayRefused as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    refused = [o for o in outcomes if isinstance(o, ReplayRefused)]
    finished = [o for o in outcomes if not isinstance(o, ReplayRefused)]
    assert len(refused) == 1
    assert "is being run right now" in str(refused[0])
    assert len(finished) == 1
    assert finished[0].status is InstanceStatus.COMPLETED
    assert runtime.store.get_instance(stopped.instance_id).generation == 1  # type: ignore[union-attr]


def test_concurrent_approvals_act_exactly_once(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(invalid_json("x"), invalid_json("y"))
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.review_id is not None

    outcomes: list[Any] = []

    def approve(who: str) -> None:
        try:
            outcomes.append(approve_review(stopped.review_id or "", VALID, runtime, by=who))
        except (ReviewError, ReplayRefused) as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=approve, args=(who,)) for who in ("ana", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(1 for o in outcomes if isinstance(o, ReviewError | ReplayRefused)) == 1
    assert calls(openai_server).count("Category") == 1
    assert runtime.store.get_instance(stopped.instance_id).status == "completed"  # type: ignore[union-attr]


def test_a_replay_closes_open_reviews_so_a_stale_decision_cannot_undo_it(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(invalid_json("x"), invalid_json("y"))
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.review_id is not None

    assert replay(stopped.instance_id, runtime).status is InstanceStatus.COMPLETED
    review = runtime.store.get_review(stopped.review_id)
    assert review is not None
    assert review.status == "superseded"
    with pytest.raises(ReviewError, match="already superseded"):
        reject_review(stopped.review_id, runtime, by="late")
    instance = runtime.store.get_instance(stopped.instance_id)
    assert instance is not None
    assert instance.status == "completed"
    assert instance.output is not None


def test_an_approval_racing_a_replay_on_one_instance_acts_exactly_once(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    """Whichever lands first wins: the step after the review runs once, never twice."""
    openai_server.enqueue(invalid_json("x"), invalid_json("y"))
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.review_id is not None
    openai_server.default = lambda body: slow(
        0.5, ok(VALID if tool_of(body) == "Invoice" else {"label": "goods"})
    )

    outcomes: list[Any] = []
    start = threading.Barrier(4)

    def act(action: Callable[[], Any]) -> None:
        start.wait()
        try:
            outcomes.append(action())
        except (ReviewError, ReplayRefused) as exc:
            outcomes.append(exc)

    actions = [
        lambda: approve_review(stopped.review_id or "", VALID, runtime, by="ana"),
        lambda: approve_review(stopped.review_id or "", VALID, runtime, by="bob"),
        lambda: replay(stopped.instance_id, runtime),
        lambda: replay(stopped.instance_id, runtime),
    ]
    threads = [threading.Thread(target=act, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    ran = [o for o in outcomes if not isinstance(o, ReviewError | ReplayRefused)]
    assert len(ran) == 1, outcomes  # one approval or one replay ran the instance on
    assert ran[0].status is InstanceStatus.COMPLETED
    instance = runtime.store.get_instance(stopped.instance_id)
    assert instance is not None
    assert instance.status == "completed"
    assert instance.generation == 1
    assert calls(openai_server).count("Category") == 1
    detail = runtime.store.instance_detail(stopped.instance_id)
    assert detail is not None
    keys = [(a.step_run_id, a.attempt_number) for a in detail.attempts]
    assert len(keys) == len(set(keys))


def test_an_unreachable_prefect_api_pauses_the_instance_and_a_replay_resumes_it(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    runtime = make_runtime()
    with temporary_settings(
        {PREFECT_API_URL: f"http://127.0.0.1:{closed_port()}/api", PREFECT_CLIENT_MAX_RETRIES: 0}
    ):
        stopped = run_workflow(PIPELINE, INPUT, runtime)

    assert stopped.status is InstanceStatus.PAUSED
    assert stopped.failure_class == "orchestrator"
    assert "Prefect's API failed" in (stopped.error or "")
    assert openai_server.requests == []  # nothing ran without its orchestrator
    resumed = replay(stopped.instance_id, runtime)
    assert resumed.status is InstanceStatus.COMPLETED


def test_prefects_flow_heartbeat_stays_off_after_its_settings_are_refreshed(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    """Ensuring the local server re-reads Prefect's settings, which brings back its 180 s
    heartbeat (a sync flow then waits ~0.9 s for it at its end): each instance sets it again."""
    from prefect.settings import get_current_settings

    openai_server.enqueue(ok(VALID))
    openai_server.default = ok({"label": "goods"})
    runtime = make_runtime()
    assert runtime.settings.workers.prefect_heartbeat_s is None
    get_current_settings().flows.heartbeat_frequency = 180  # what a settings refresh brings back

    result = run_workflow(PIPELINE, INPUT, runtime)

    assert result.status is InstanceStatus.COMPLETED
    assert get_current_settings().flows.heartbeat_frequency is None


def test_replaying_a_step_stops_between_instances_once_cancelled(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    """The TUI's step replay can be stopped: no further instance starts, and those not reached
    stay stopped as they were (nothing is sent for them)."""
    from flows.instances import replay_step_failures

    openai_server.default = ok({"vendor": "Acme", "total": "lots", "currency": "EUR"})
    runtime = make_runtime()
    stopped = [run_workflow(PIPELINE, {"text": f"invoice {n}"}, runtime) for n in range(3)]
    assert {s.status for s in stopped} == {InstanceStatus.NEEDS_REVIEW}

    def answers(body: dict[str, Any]) -> Any:
        return ok(VALID) if tool_of(body) == "Invoice" else ok({"label": "goods"})

    openai_server.default = answers
    sent = len(openai_server.requests)
    cancel = threading.Event()
    done = replay_step_failures("extract-invoice", runtime, on_result=lambda _: cancel.set(), cancel=cancel)

    assert [r.after for r in done] == ["completed"]
    assert len(openai_server.requests) == sent + 2  # one instance: its two steps, nothing more
    statuses = sorted(str(runtime.store.get_instance(s.instance_id).status) for s in stopped)  # type: ignore[union-attr]
    assert statuses == ["completed", "needs_review", "needs_review"]
