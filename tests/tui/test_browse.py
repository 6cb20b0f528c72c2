"""The operator's path through the TUI, driven by Textual's Pilot at 80x24, mouse-free.

The data is real: a workflow run against the loopback OpenAI server leaves an
instance in needs_review with two recorded attempts, and the model's output
carries Rich markup, an ANSI colour code and an OSC window-title sequence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable, Static, TabbedContent

from flows.instances import run_workflow
from flows.registry import WORKFLOWS
from flows.runtime import Runtime
from storage.models import InstanceStatus, Notification
from storage.store import Fence
from tests.flows.helpers import INPUT, VALID
from tests.flows.pipeline import PIPELINE
from tests.servers import OpenAIServer, error, invalid_json, ok
from tui.app import StepLineApp
from tui.literal import literal
from tui.screens.attempt import AttemptScreen
from tui.screens.error import ActionFailed
from tui.screens.instance import InstanceScreen
from tui.screens.instances import InstancesScreen, parse_search
from tui.screens.notifications import NotificationsScreen

pytestmark = pytest.mark.usefixtures("prefect_harness")

HOSTILE = "[bold red]x[/] \x1b[31mred \x1b]0;title\x07"


def shown(widget: Static) -> str:
    content = widget.content
    assert isinstance(content, Text)
    return content.plain


def test_untrusted_text_is_shown_never_styled_or_executed() -> None:
    text = literal(HOSTILE)
    assert text.plain == "[bold red]x[/] \\x1b[31mred \\x1b]0;title\\x07"
    assert "\x1b" not in text.plain
    assert "\x07" not in text.plain
    highlighted = literal("abcdef", [(1, 3, "red")])
    assert highlighted.plain == "abcdef"
    assert [(span.start, span.end, str(span.style)) for span in highlighted.spans] == [(1, 3, "red")]


def test_browse_open_a_failure_and_compare_it_with_its_schema(
    make_runtime: Callable[..., Runtime],
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    seen = tmp_path / "seen-in-editor"
    viewer = tmp_path / "viewer"
    viewer.write_text(f'#!/bin/sh\ncp "$1" {seen}\n')
    viewer.chmod(0o755)
    monkeypatch.setenv("VISUAL", str(viewer))
    monkeypatch.setitem(WORKFLOWS, PIPELINE.name, PIPELINE)
    bad = {"vendor": HOSTILE, "total": "lots", "currency": "EUR"}
    # The answer fails validation; the re-ask comes back as raw, cut-off text with control codes.
    openai_server.enqueue(ok(bad), invalid_json('{"vendor": "' + HOSTILE))
    runtime = make_runtime()
    stopped = run_workflow(PIPELINE, INPUT, runtime)
    assert stopped.status is InstanceStatus.NEEDS_REVIEW

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, InstancesScreen)
            instances = app.screen.query_one("#instances", DataTable)
            assert instances.row_count == 1
            assert instances.get_row_at(0)[2] == "needs_review"

            await pilot.press("question_mark")  # this screen's keys, beside it
            await pilot.pause()
            assert app.screen.query("HelpPanel")
            await pilot.press("question_mark")
            await pilot.pause()
            assert not app.screen.query("HelpPanel")

            await pilot.press("enter")
            assert isinstance(app.screen, InstanceScreen)
            attempts = app.screen.query_one("#attempts", DataTable)
            assert attempts.row_count == 2
            assert "needs_review" in shown(app.screen.query_one("#summary", Static))

            await pilot.press("f")  # open the first failed attempt
            assert isinstance(app.screen, AttemptScreen)
            raw = shown(app.screen.query_one("#raw-output", Static))
            assert "[bold red]x[/]" in raw  # markup stays text
            assert "$.total: Input should be a valid number" in raw
            assert '"title": "Invoice"' in shown(app.screen.query_one("#schema", Static))
            assert "1 validation errors" in shown(app.screen.query_one("#verdict", Static))

            await pilot.press("y")  # the raw output, whole, to the clipboard
            assert isinstance(app.screen, AttemptScreen)
            assert app.screen.attempt is not None
            assert app.clipboard == app.screen.attempt.raw_output
            assert '"total": "lots"' in app.clipboard
            app.screen.query_one("#raw-pane").focus()
            await pilot.press("m")  # the raw output on the whole screen, and back
            await pilot.pause()
            assert app.screen.maximized is app.screen.query_one("#raw-pane")
            await pilot.press("m")
            await pilot.pause()
            assert app.screen.maximized is None
            await pilot.press("e")  # the same text, in the operator's editor
            await pilot.pause()
            assert seen.read_text() == app.screen.attempt.raw_output
            monkeypatch.setenv("VISUAL", str(tmp_path / "no-such-editor"))
            await pilot.press("e")  # an editor that cannot start is said, and the app goes on
            await pilot.pause()
            assert isinstance(app.screen, ActionFailed)
            assert "no-such-editor" in app.screen.message
            await pilot.press("escape")
            assert isinstance(app.screen, AttemptScreen)

            await pilot.press("2")  # the fields tab
            assert app.screen.query_one(TabbedContent).active == "fields"  # even from a focused pane
            fields = app.screen.query_one("#field-table", DataTable)
            verdicts = {
                str(fields.get_row_at(n)[0]): str(fields.get_row_at(n)[1]) for n in range(fields.row_count)
            }
            assert verdicts["$.total"] == "wrong_type"
            assert verdicts["$.currency"] == "ok"
            assert str(fields.get_row_at(0)[0]) == "$.total"  # problems first, under the cursor
            await pilot.press("y")  # the selected field's value
            assert app.clipboard == "lots"
            await pilot.press("3", "y")  # the request
            assert "ACME GmbH invoice no. 7" in app.clipboard
            await pilot.press("2")

            first = app.screen
            await pilot.press("right_square_bracket")  # the re-ask's attempt, in this one's place
            await pilot.pause()
            assert isinstance(app.screen, AttemptScreen)
            assert app.screen is not first
            assert app.screen.query_one(TabbedContent).active == "fields"  # the same tab
            await pilot.press("right_square_bracket")  # there is none after it
            await pilot.pause()
            await pilot.press("left_square_bracket", "escape")  # back to the first, back out
            await pilot.pause()
            assert isinstance(app.screen, InstanceScreen)

            await pilot.press("down", "enter")  # the re-ask's attempt, from the list
            assert isinstance(app.screen, AttemptScreen)
            raw = shown(app.screen.query_one("#raw-output", Static))
            assert "\\x1b[31m" in raw  # control codes are spelled out, never sent
            assert "\\x1b]0;title\\x07" in raw
            assert "\x1b" not in raw
            assert shown(app.screen.query_one("#verdict", Static)).startswith(
                "not JSON: Invalid control character at line 1 column 28; parsing stopped at character 27"
            )

            await pilot.press("escape", "escape")
            assert isinstance(app.screen, InstancesScreen)

    asyncio.run(scenario())


def test_a_completed_instance_shows_its_output_and_a_refused_request_its_error_body(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(WORKFLOWS, PIPELINE.name, PIPELINE)
    openai_server.enqueue(error(503, message="The engine is currently overloaded"), ok(VALID))
    openai_server.default = ok({"label": "goods"})
    runtime = make_runtime()
    done = run_workflow(PIPELINE, INPUT, runtime)
    assert done.status is InstanceStatus.COMPLETED

    async def scenario() -> None:
        app = StepLineApp(runtime.store)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("enter")
            assert isinstance(app.screen, InstanceScreen)
            summary = shown(app.screen.query_one("#summary", Static))
            assert 'output {"invoice": {"vendor": "Acme"' in summary
            attempts = app.screen.query_one("#attempts", DataTable)
            assert [str(attempts.get_row_at(n)[0]) for n in range(attempts.row_count)] == ["0", "0", "0"]

            await pilot.press("f")  # the 503
            assert isinstance(app.screen, AttemptScreen)
            verdict = shown(app.screen.query_one("#verdict", Static))
            assert verdict.startswith("no answer to check against the schema: unavailable: Error code: 503")
            assert "The engine is currently overloaded" in shown(app.screen.query_one("#raw-output", Static))
            await pilot.press("2")  # an empty tab says why
            empty = app.screen.query_one("#fields-empty", Static)
            assert empty.display
            assert str(empty.content).startswith("no fields: the provider sent no answer")

            await pilot.press("escape", "escape", "n")  # nothing was notified: the screen says why
            assert isinstance(app.screen, NotificationsScreen)
            hint = app.screen.query_one("#notifications-empty", Static)
            assert hint.display
            assert "[notify]" in str(hint.content)

    asyncio.run(scenario())


def test_search_and_status_filter_narrow_the_list(
    make_runtime: Callable[..., Runtime], openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime()
    store = runtime.store
    for n in range(3):
        store.create_instance("contract-review", {"n": n}, "ana", source=f"inbox/c{n}.json")
    failed = store.create_instance("customer-intake", {"n": 9}, "bo", source="inbox/odd.json")
    store.finish_instance(
        Fence(failed.id, failed.fence),
        InstanceStatus.PAUSED,
        failed_step="triage",
        failure_class="rate_limited",
    )

    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.screen.query_one("#instances", DataTable)
            assert table.row_count == 4
            await pilot.press("slash", *"odd", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert table.row_count == 1
            assert str(table.get_row_at(0)[1]) == "customer-intake"

    asyncio.run(scenario())


def test_lists_and_the_open_instance_refresh_on_their_own_keeping_cursor_and_filter(
    make_runtime: Callable[..., Runtime],
) -> None:
    """Another process moves instances on while the TUI is open: it shows it within the refresh
    interval without a key press, the cursor stays on its instance and the filter holds."""
    store = make_runtime().store
    first = store.create_instance("contract-review", {"n": 1}, "ana")
    second = store.create_instance("contract-review", {"n": 2}, "ana")
    store.create_instance("customer-intake", {"n": 3}, "bo")

    async def scenario() -> None:
        app = StepLineApp(store, refresh_s=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.screen.query_one("#instances", DataTable)
            await pilot.press("slash", *"workflow:contract-review", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert table.row_count == 2
            await pilot.press("down")  # on the older contract, `first`
            assert list(table.rows)[table.cursor_row].value == first.id

            # Elsewhere: a new contract arrives (above the cursor) and `first` pauses.
            newer = store.create_instance("contract-review", {"n": 4}, "ana")
            store.create_instance("customer-intake", {"n": 5}, "bo")  # filtered out
            store.finish_instance(
                Fence(first.id, first.fence), InstanceStatus.PAUSED, failed_step="x", failure_class="timeout"
            )
            await pilot.pause(1.2)
            await app.workers.wait_for_complete()
            await pilot.pause()
            keys = [key.value for key in table.rows]
            assert keys == [newer.id, second.id, first.id]  # the filter held
            assert keys[table.cursor_row] == first.id  # the cursor moved with its instance
            assert table.get_row(first.id)[2] == "paused"
            assert str(app.screen.query_one("#updated", Static).content).startswith("updated ")

            await pilot.press("up", "enter")  # the open instance refreshes too
            assert isinstance(app.screen, InstanceScreen)
            summary = app.screen.query_one("#summary", Static)
            assert shown(summary).startswith(f"contract-review  {second.status}  ")
            assert second.id in shown(summary)
            store.finish_instance(Fence(second.id, second.fence), InstanceStatus.COMPLETED, output={})
            await pilot.pause(1.2)
            assert shown(summary).startswith("contract-review  completed  ")

    asyncio.run(scenario())


def test_the_search_box_takes_field_filters_and_an_age() -> None:
    found = parse_search("workflow:contract-review failure:rate_limited since:2h acme corp")
    assert found["workflow"] == "contract-review"
    assert found["failure_class"] == "rate_limited"
    assert found["text"] == "acme corp"
    assert (
        timedelta(hours=2) - timedelta(seconds=5)
        < datetime.now(UTC) - found["since"]
        < timedelta(hours=2, seconds=5)
    )
    assert parse_search("since:soon") == {"text": "since:soon"}  # not an age: searched as text


def test_field_filters_notifications_and_the_command_palette(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime()
    store = runtime.store
    calm = store.create_instance("contract-review", {"n": 1}, "ana")
    store.finish_instance(
        Fence(calm.id, calm.fence), InstanceStatus.PAUSED, failed_step="assess-risk", failure_class="timeout"
    )
    busy = store.create_instance("contract-review", {"n": 2}, "ana")
    store.finish_instance(
        Fence(busy.id, busy.fence),
        InstanceStatus.PAUSED,
        failed_step="assess-risk",
        failure_class="rate_limited",
    )
    store.add_notification(
        Notification(
            instance_id=busy.id,
            event="paused",
            target="json://127.0.0.1",
            title="t",
            body="{}",
            delivered=False,
            error="refused",
        )
    )

    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.press("slash", *"failure:rate_limited", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.screen.query_one("#instances", DataTable)
            assert table.row_count == 1
            assert str(table.get_row_at(0)[4]) == "rate_limited"

            await pilot.press("n")
            assert isinstance(app.screen, NotificationsScreen)
            row = app.screen.query_one("#notifications", DataTable).get_row_at(0)
            assert row[1] == "paused"
            assert str(row[3]) == "no: refused"
            await pilot.press("enter")  # to the instance it was about
            assert isinstance(app.screen, InstanceScreen)
            assert app.screen.instance_id == busy.id

            await pilot.press("escape", "escape")
            commands = [c.title for c in app.get_system_commands(app.screen)]
            assert {"Reviews", "Prompts", "Notifications"} <= set(commands)

    asyncio.run(scenario())


def test_empty_lists_say_why_and_what_to_do(tmp_path: Path) -> None:
    from storage.db import open_engine
    from storage.store import Store

    store = Store(open_engine(f"sqlite:///{tmp_path / 'empty.db'}"))

    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            for key, empty, says in (
                ("v", "#reviews-empty", "No open reviews"),
                ("p", "#prompts-empty", "No prompts yet"),
                ("n", "#notifications-empty", "No notifications yet"),
            ):
                await pilot.press(key)
                await pilot.pause()
                shown = app.screen.query_one(empty, Static)
                assert shown.display
                assert str(shown.content).startswith(says)
                await pilot.press("escape")
                await pilot.pause()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
