"""The review queue, and one review: correct the output in place, checked as you type, then decide."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TextArea

from steps.diagnose import check_against_schema
from steps.errors import describe_json_error
from storage.models import ReviewItem
from storage.store import Store
from tui import actions
from tui.editor import edit_or_say
from tui.literal import literal
from tui.progress import ActionProgress
from tui.screens.error import ActionFailed, guarded
from tui.tables import refill, refresh_while_shown

__all__ = ["ReviewScreen", "ReviewsScreen"]


class ReviewsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="back", tooltip="Back to the instances"),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the open reviews again"),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "No open reviews. An instance lands here when a step's output still breaks its schema "
            "after the re-asks (or the step asks for review): open it, correct the output, approve.",
            id="reviews-empty",
            classes="empty",
            markup=False,
        )
        yield DataTable(id="reviews", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#reviews", DataTable)
        table.add_columns("review", "instance", "step", "failure", "errors", "created (UTC)")
        self.action_reload()
        table.focus()
        refresh_while_shown(self, self.action_reload)

    def on_screen_resume(self) -> None:
        self.action_reload()

    @guarded("the reviews could not be read")
    def action_reload(self) -> None:
        rows = [
            (
                item.id,
                (
                    item.id[:8],
                    item.instance_id[:8],
                    literal(f"{item.step}[{item.index}]"),
                    item.failure_class,
                    str(len(item.validation_errors or [])),
                    item.created_at.strftime("%m-%d %H:%M"),
                ),
            )
            for item in self.store.list_reviews(status="open", limit=1000)
        ]
        refill(self.query_one("#reviews", DataTable), rows)
        self.query_one("#reviews-empty", Static).display = not rows

    @on(DataTable.RowSelected, "#reviews")
    @guarded("the review could not be opened")
    def _open(self, event: DataTable.RowSelected) -> None:
        item = self.store.get_review(event.row_key.value or "")
        if item is not None:
            self.app.push_screen(ReviewScreen(self.store, item))


class ReviewScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="back", tooltip="Back to the reviews, undecided"),
        Binding("ctrl+s", "approve", "Approve", id="approve", tooltip="Approve the corrected output"),
        Binding("ctrl+r", "reject", "Reject", id="reject", tooltip="Reject: the instance fails"),
        # ctrl+o, not e: the correction's text area has the focus, and e is a letter in it.
        Binding(
            "ctrl+o",
            "external_edit",
            "Editor",
            id="editor",
            tooltip="Edit the correction in $VISUAL / $EDITOR; it is checked as if typed",
        ),
        Binding(
            "x",
            "stop",
            "Stop",
            id="stop",
            tooltip="Pause the resumed instance before its next step (the approval stands)",
        ),
    ]

    def __init__(self, store: Store, item: ReviewItem) -> None:
        super().__init__()
        self.store = store
        self.item = item
        self.deciding = False

    def compose(self) -> ComposeResult:
        item = self.item
        yield Header()
        yield Static(
            Text(
                f"review {item.id[:12]}  {item.step}[{item.index}]  {item.failure_class}  "
                f"instance {item.instance_id[:12]}"
            ),
            id="summary",
        )
        with Horizontal():
            with VerticalScroll(classes="pane", id="raw-pane", can_maximize=True) as raw:
                raw.border_title = "raw output, as received"
                yield Static(literal(item.raw_output or "(none)"), id="raw-output")
            editor = TextArea(self._starting_text(), language="json", id="editor", classes="pane")
            editor.border_title = "corrected output"
            yield editor
        yield Static(id="verdict")
        yield ActionProgress(id="progress")
        yield Footer()

    def _starting_text(self) -> str:
        try:
            return json.dumps(json.loads(self.item.raw_output or ""), indent=2, ensure_ascii=False)
        except json.JSONDecodeError:
            return self.item.raw_output or "{}"

    def on_mount(self) -> None:
        self._check()
        self.query_one("#editor", TextArea).focus()

    @on(TextArea.Changed, "#editor")
    def _check(self) -> None:
        problems = check_against_schema(self.query_one("#editor", TextArea).text, self.item.expected_schema)
        verdict = self.query_one("#verdict", Static)
        if problems:
            text = Text(f"{len(problems)} problems to fix before ctrl+s can approve:\n", style="yellow")
            for problem in problems[:6]:
                text.append_text(literal(f"  {problem}\n"))
            verdict.update(text)
        else:
            verdict.update(
                Text("matches the schema: ctrl+s approves and resumes the instance", style="green")
            )

    def action_external_edit(self) -> None:
        editor = self.query_one("#editor", TextArea)
        edited = edit_or_say(self.app, editor.text, suffix=".json")
        if edited is not None:
            editor.text = edited  # checked as typed

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":  # in the footer only while the approved instance runs on
            return self.query_one("#progress", ActionProgress).running
        return True

    @guarded("the approval did not start")
    def action_approve(self) -> None:
        text = self.query_one("#editor", TextArea).text
        try:
            output = json.loads(text)
        except json.JSONDecodeError as exc:
            self.notify(f"not JSON: {describe_json_error(exc)}", severity="error")
            return
        problems = check_against_schema(text, self.item.expected_schema)
        if problems:  # refused here, at once: nothing is started for a correction that cannot pass
            self.notify(
                f"not approved: the correction breaks the schema in {len(problems)} place(s), "
                f"first {problems[0]}",
                severity="error",
            )
            return
        if self.deciding:
            return
        self.deciding = True
        progress = self.query_one("#progress", ActionProgress)
        cancel = progress.begin(f"approved; instance {self.item.instance_id[:12]} resumes")
        # The correction is decided: freeze it, and take the keyboard off it so that x is a key.
        editor = self.query_one("#editor", TextArea)
        editor.read_only = True
        self.query_one("#raw-pane").focus()
        self.refresh_bindings()
        by = actions.operator()
        self._run(lambda: actions.approve(self.item.id, output, by, on_step=progress.on_step, cancel=cancel))

    def action_stop(self) -> None:
        self.query_one("#progress", ActionProgress).stop()

    @guarded("the rejection did not start")
    def action_reject(self) -> None:
        if self.deciding:
            return
        self.deciding = True
        self.query_one("#verdict", Static).update(Text("rejecting…"))
        by = actions.operator()
        self._run(lambda: actions.reject(self.item.id, by))

    @work(thread=True, exclusive=True, group="decide", exit_on_error=False)
    def _run(self, call: Callable[[], actions.Outcome]) -> None:
        outcome = call()
        self.app.call_from_thread(self._done, outcome)

    def _done(self, outcome: actions.Outcome) -> None:
        self.deciding = False
        self.query_one("#progress", ActionProgress).end()
        self.query_one("#editor", TextArea).read_only = False
        self.refresh_bindings()
        self.query_one("#verdict", Static).update(literal(outcome.message))
        if outcome.ok or outcome.interrupted:  # decided either way; a stop asked for is no failure
            self.notify(outcome.message + (f"; {outcome.action}" if outcome.interrupted else ""), timeout=8)
            self.app.pop_screen()
        else:
            self.app.push_screen(
                ActionFailed("the decision did not go through", outcome.message, outcome.action)
            )
