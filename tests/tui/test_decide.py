"""From the TUI, an operator corrects a review (checked as they type) and replays a paused instance."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from rich.text import Text
from textual.widgets import DataTable, Input, Static, TextArea

from flows.engine import run_step
from flows.instances import run_workflow
from flows.registry import WORKFLOWS
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.definition import Prompt
from steps.routing import choose_route
from storage.models import InstanceStatus
from tests.flows.helpers import INPUT, VALID, Document
from tests.flows.pipeline import PIPELINE, Filed, tool_of
from tests.servers import OpenAIServer, Reply, error, ok, slow
from tui import actions
from tui.app import StepLineApp
from tui.progress import ActionProgress
from tui.screens.attempt import AttemptScreen
from tui.screens.confirm import Confirm
from tui.screens.error import ActionFailed
from tui.screens.instance import InstanceScreen
from tui.screens.instances import InstancesScreen
from tui.screens.prompts import PromptScreen, PromptsScreen
from tui.screens.replays import ReplayScreen
from tui.screens.reviews import ReviewScreen, ReviewsScreen

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WORKFLOWS, PIPELINE.name, PIPELINE)


def shown(widget: Static) -> str:
    content = widget.content
    assert isinstance(content, Text)
    return content.plain


def numbers_only_when_asked(body: dict[str, Any]) -> Reply:
    """A model that gets the invoice total right only when the prompt insists on a number."""
    if tool_of(body) != "Invoice":
        return ok({"label": "goods"})
    asked = json.dumps(body["messages"])
    return ok(VALID) if "total as a number" in asked else ok({**VALID, "total": "lots"})


async def settle(app: StepLineApp) -> None:
    await app.workers.wait_for_complete()
    for _ in range(3):
        await asyncio.sleep(0.05)


def test_a_review_is_corrected_in_place_and_approval_resumes_the_instance(
    make_runtime: Callable[..., Runtime],
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    editor_script = tmp_path / "editor"
    editor_script.write_text('#!/bin/sh\nsed -i \'s/"12.5"/12.5/\' "$1"\n')
    editor_script.chmod(0o755)
    monkeypatch.setenv("VISUAL", str(editor_script))
    bad = {"vendor": "Acme", "total": "lots", "currency": "EUR"}
    openai_server.enqueue(ok(bad), ok(bad))
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.status is InstanceStatus.NEEDS_REVIEW
    openai_server.default = ok({"label": "goods"})  # the categorize step, after approval

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.press("v")
            assert isinstance(app.screen, ReviewsScreen)
            assert app.screen.query_one("#reviews", DataTable).row_count == 1
            await pilot.press("enter")
            assert isinstance(app.screen, ReviewScreen)
            verdict = app.screen.query_one("#verdict", Static)
            assert "$.total: 'lots' is not of type 'number'" in shown(verdict)

            editor = app.screen.query_one("#editor", TextArea)
            editor.text = json.dumps({**bad, "total": "12.5"})
            await pilot.pause()
            assert "$.total: '12.5' is not of type 'number'" in shown(verdict)  # checked as typed
            await pilot.press("ctrl+o")  # the operator's $EDITOR fixes the string, read back and checked
            await pilot.pause()
            assert json.loads(editor.text)["total"] == 12.5
            assert shown(verdict).startswith("matches the schema")
            editor.text = json.dumps({**bad, "total": "12.5"})
            await pilot.pause()
            await pilot.press("ctrl+s")  # refused at once: nothing starts for it
            await settle(app)
            assert isinstance(app.screen, ReviewScreen)
            assert not app.screen.deciding
            assert runtime.store.get_review(app.screen.item.id).status == "open"  # type: ignore[union-attr]
            editor.text = json.dumps(VALID)
            await pilot.pause()
            assert shown(verdict).startswith("matches the schema")

            await pilot.press("ctrl+s")
            await settle(app)
            assert isinstance(app.screen, ReviewsScreen)  # decided, back to the queue
            assert app.screen.query_one("#reviews", DataTable).row_count == 0

    asyncio.run(scenario())
    instance = runtime.store.get_instance(stopped.instance_id)
    assert instance is not None
    assert instance.status == "completed"
    assert instance.output["invoice"] == VALID
    assert [tool_of(r.body) for r in openai_server.requests] == ["Invoice", "Invoice", "Category"]


def test_warming_loads_the_engine_once_and_every_action_shares_it(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    """``stepline tui`` warms up after the first paint: the first action finds the runtime open
    and the first step's client built, and the runtime outlives the action."""
    openai_server.enqueue(ok(VALID), error(401))
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.status is InstanceStatus.PAUSED
    openai_server.default = ok({"label": "services"})
    actions.shutdown()  # nothing left from an earlier test in this process
    first = PIPELINE.steps[0]
    first_model = choose_route(first, runtime.settings, privacy=PIPELINE.privacy.of(first)).model_id

    async def scenario() -> None:
        app = StepLineApp(runtime.store, warm=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            for _ in range(600):  # the warm-up is a worker thread started after the first paint
                warmed = actions.shared_runtime()
                if warmed is not None and warmed.executor.pool.built(first_model):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the engine was not warmed within 60 s")
            assert len(openai_server.requests) == 2  # warming sends nothing
            await pilot.press("enter", "R")
            await settle(app)
            assert "completed" in shown(app.screen.query_one("#summary", Static))
            assert actions.shared_runtime() is warmed  # the action used it and left it open

    try:
        asyncio.run(scenario())
    finally:
        actions.shutdown()
    assert actions.shared_runtime() is None
    assert [tool_of(r.body) for r in openai_server.requests] == ["Invoice", "Category", "Category"]


def test_replay_from_the_instance_screen(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(ok(VALID), error(401))  # categorize is refused our credentials: paused
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.status is InstanceStatus.PAUSED
    openai_server.default = ok({"label": "services"})

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.press("enter")
            assert isinstance(app.screen, InstanceScreen)
            assert app.screen.query_one("#attempts", DataTable).row_count == 2
            await pilot.press("R")
            await settle(app)
            assert "completed" in shown(app.screen.query_one("#summary", Static))
            assert app.screen.query_one("#attempts", DataTable).row_count == 3  # one new attempt
            await pilot.press("escape")
            await settle(app)
            assert isinstance(app.screen, InstancesScreen)
            assert app.screen.query_one("#instances", DataTable).get_row_at(0)[2] == "completed"

    asyncio.run(scenario())
    # Only the failed step was asked again: extract's output was reused.
    assert [tool_of(r.body) for r in openai_server.requests] == ["Invoice", "Category", "Category"]


def test_edit_a_prompt_then_replay_and_the_step_passes(
    make_runtime: Callable[..., Runtime],
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    editor_script = tmp_path / "editor"
    editor_script.write_text("#!/bin/sh\nprintf '\\nGive the total as a number.' >> \"$1\"\n")
    editor_script.chmod(0o755)
    monkeypatch.setenv("VISUAL", str(editor_script))
    openai_server.default = numbers_only_when_asked
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.status is InstanceStatus.NEEDS_REVIEW

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.press("enter", "f", "enter")  # browse: open the instance, then its failure
            assert isinstance(app.screen, AttemptScreen)
            assert "1 validation errors" in shown(app.screen.query_one("#verdict", Static))
            await pilot.press("escape", "escape", "p")
            assert isinstance(app.screen, PromptsScreen)
            await pilot.press("enter")
            assert isinstance(app.screen, PromptScreen)
            editor = app.screen.query_one("#template", TextArea)
            assert editor.text == "Invoice: $text"
            await pilot.press("ctrl+o")  # edited in the operator's $VISUAL, read back
            await pilot.pause()
            assert editor.text == "Invoice: $text\nGive the total as a number."
            assert "+Give the total as a number." in shown(app.screen.query_one("#diff", Static))
            system = app.screen.query_one("#system", TextArea)  # the system prompt is editable too
            assert system.text == PIPELINE.steps[0].prompt.system
            system.text = "You file invoices for ACME's accounts team."
            await pilot.pause()
            diff = shown(app.screen.query_one("#diff", Static))
            assert "+You file invoices for ACME's accounts team." in diff
            assert "+Give the total as a number." in diff
            app.screen.query_one("#note", Input).value = "totals came back as words"
            await pilot.press("ctrl+s")
            await settle(app)
            assert isinstance(app.screen, PromptsScreen)
            steps = app.screen.query_one("#steps", DataTable)
            row = steps.get_row("extract-invoice")
            assert (row[1], row[2]) == ("2", "chosen in the TUI")  # the list counts the save at once

            await pilot.press("escape", "enter", "R")  # the instance, replayed
            await settle(app)
            assert "completed" in shown(app.screen.query_one("#summary", Static))

    asyncio.run(scenario())
    versions = runtime.store.prompt_versions("extract-invoice")
    assert len(versions) == 2
    chosen = runtime.store.current_prompt("extract-invoice")
    assert chosen is not None
    assert chosen.note == "totals came back as words"
    detail = runtime.store.instance_detail(stopped.instance_id)
    assert detail is not None
    last_extract = [a for a in detail.attempts if a.step == "extract-invoice"][-1]
    assert last_extract.prompt_version_id == chosen.id
    assert last_extract.failure_class is None
    assert chosen.system == "You file invoices for ACME's accounts team."
    sent = openai_server.requests[-2].body["messages"]  # the replayed extract, as the server got it
    assert sent[0] == {"role": "system", "content": "You file invoices for ACME's accounts team."}
    assert sent[1]["content"].endswith("Give the total as a number.")


def test_a_prompt_with_an_unknown_placeholder_is_refused_and_nothing_saved(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    runtime = make_runtime()
    run_workflow(PIPELINE, INPUT, runtime)

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.press("p", "enter")
            app.screen.query_one("#template", TextArea).text = "Invoice: $txt"
            await pilot.press("ctrl+s")
            await settle(app)
            assert isinstance(app.screen, ActionFailed)  # said where it can be read, then...
            assert "txt" in app.screen.message
            assert "nothing saved" in app.screen.message
            await pilot.press("escape")
            assert isinstance(app.screen, PromptScreen)  # ...still editing

    asyncio.run(scenario())
    assert runtime.store.current_prompt("extract-invoice") is None


def test_after_a_prompt_edit_every_instance_stopped_at_the_step_is_replayed_live(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer
) -> None:
    openai_server.default = numbers_only_when_asked
    runtime = make_runtime()
    stopped = [run_workflow(PIPELINE, {"text": f"invoice {n}"}, runtime) for n in range(3)]
    assert {s.status for s in stopped} == {InstanceStatus.NEEDS_REVIEW}
    edited = Prompt(
        system="Extract the invoice's vendor, total and currency.", user="$text\nGive the total as a number."
    )
    runtime.store.set_current_prompt(
        "extract-invoice", edited.system, edited.user, edited.content_hash, "ana", "numbers, please"
    )

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            sent = len(openai_server.requests)
            await pilot.press("p", "R")  # asks first, with the count
            assert isinstance(app.screen, Confirm)
            assert "Replay the 3 instance(s) stopped at extract-invoice?" in app.screen.question
            await pilot.press("n")  # no: nothing starts
            await settle(app)
            assert isinstance(app.screen, PromptsScreen)
            assert len(openai_server.requests) == sent
            await pilot.press("R", "y")
            assert isinstance(app.screen, ReplayScreen)
            await settle(app)
            progress = shown(app.screen.query_one("#progress", Static))
            assert "3/3 replayed, done" in progress
            assert "after: 3 passed, 0 still stopped" in progress
            assert app.screen.query_one("#replays", DataTable).row_count == 3
            diff = shown(app.screen.query_one("#raw-diff", Static))
            assert '-{"vendor": "Acme", "total": "lots", "currency": "EUR"}' in diff
            assert '+{"vendor": "Acme", "total": 120.5, "currency": "EUR"}' in diff

    asyncio.run(scenario())
    assert {runtime.store.get_instance(s.instance_id).status for s in stopped} == {"completed"}  # type: ignore[union-attr]


def test_a_failed_action_shows_what_happened_and_what_to_do_and_the_app_stays_open(
    make_runtime: Callable[..., Runtime],
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    openai_server.enqueue(ok(VALID), error(401))
    runtime = make_runtime()
    assert run_workflow(PIPELINE, INPUT, runtime).status is InstanceStatus.PAUSED
    openai_server.default = error(401)  # the key is still refused: the replay pauses again

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.press("enter", "R")
            await settle(app)
            assert isinstance(app.screen, ActionFailed)
            assert "paused at categorize: auth" in app.screen.message
            assert app.screen.action_text.startswith("fix the API key in the environment")
            await pilot.press("escape")
            assert isinstance(app.screen, InstanceScreen)

            # The action cannot even start: the catalog became unreadable meanwhile.
            broken = tmp_path / "broken.toml"
            broken.write_text("[models.x]\nprovider = \n")
            monkeypatch.setenv("STEPLINE_CONFIG", str(broken))
            await pilot.press("R")
            await settle(app)
            assert isinstance(app.screen, ActionFailed)
            assert "broken.toml" in app.screen.message
            await pilot.press("enter")
            assert isinstance(app.screen, InstanceScreen)
            assert app.is_running

    asyncio.run(scenario())


def three_steps() -> Workflow:
    """The pipeline with a third step, so that a run can be stopped between two steps."""
    extract, categorize = PIPELINE.steps
    recheck = dataclasses.replace(
        categorize, name="recheck", prompt=Prompt(system="Check again: goods or services?", user="$vendor")
    )

    @flow(name="file-invoice-3")
    def file_invoice_3(document: Document) -> Filed:
        invoice = run_step(extract, document)
        category = run_step(categorize, invoice)
        run_step(recheck, invoice)
        return Filed(invoice=invoice, category=category)

    return Workflow(
        name="file-invoice-3",
        description="three steps",
        flow=file_invoice_3,
        input_model=Document,
        output_model=Filed,
        steps=(extract, categorize, recheck),
    )


def test_an_approval_shows_each_step_as_it_runs_and_x_pauses_before_the_next(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = three_steps()
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    bad = {"vendor": "Acme", "total": "lots", "currency": "EUR"}
    openai_server.enqueue(ok(bad), ok(bad), slow(1.2, ok({"label": "goods"})))  # under the 2 s timeout
    openai_server.default = ok({"label": "goods"})
    runtime = make_runtime()
    stopped = run_workflow(workflow, INPUT, runtime)
    assert stopped.status is InstanceStatus.NEEDS_REVIEW

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app)
            await pilot.press("v", "enter")
            app.screen.query_one("#editor", TextArea).text = json.dumps(VALID)
            await pilot.press("ctrl+s")
            progress = app.screen.query_one("#progress", ActionProgress)
            deadline = time.monotonic() + 60  # the first action opens the runtime: slow on a busy machine
            while "running categorize" not in shown(progress) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the categorize request is then held 1.2 s by the server
            assert "running categorize" in shown(progress)
            assert "x pauses it before its next step" in shown(progress)
            await pilot.press("x")
            assert "stopping before the next step" in shown(progress)
            await settle(app)
            assert isinstance(app.screen, ReviewsScreen)  # decided; the stop was asked for: no modal

    asyncio.run(scenario())
    instance = runtime.store.get_instance(stopped.instance_id)
    assert instance is not None
    assert (instance.status, instance.failed_step, instance.failure_class) == (
        "paused",
        "recheck",
        "interrupted",
    )
    systems = [r.body["messages"][0]["content"] for r in openai_server.requests]
    assert "Is this invoice for goods or services?" in systems  # categorize ran (a retry may repeat it)
    assert "Check again: goods or services?" not in systems  # at the wire: recheck was never sent
