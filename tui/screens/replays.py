"""Replay every instance stopped at one step, live: how many now pass, and how each output changed."""

from __future__ import annotations

import difflib
import threading
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui import actions
from tui.literal import literal
from tui.screens.error import ActionFailed

if TYPE_CHECKING:
    from flows.instances import StepReplay

__all__ = ["ReplayScreen", "raw_diff"]


def raw_diff(old: str | None, new: str | None) -> Text:
    """The new raw output against the old, line by line, shown literally."""
    if new is None:
        return Text(
            "no new attempt at this step (its output was reused or the replay was refused)", style="dim"
        )
    text = Text()
    for line in difflib.unified_diff(
        (old or "").splitlines(), new.splitlines(), "before", "after", lineterm="", n=2
    ):
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
        text.append_text(literal(line + "\n", style=style))
    return text or Text("the same raw output as before", style="dim")


class ReplayScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape,backspace",
            "app.pop_screen",
            "Back",
            id="back",
            tooltip="Back to the steps; as x, no further replay starts",
        ),
        Binding("x", "stop", "Stop", id="stop", tooltip="Start no more replays; the rest stay stopped"),
    ]

    def __init__(self, step: str, total: int) -> None:
        super().__init__()
        self.step = step
        self.total = total
        self.results: dict[str, StepReplay] = {}
        self.cancel = threading.Event()
        self.done = False

    def on_unmount(self) -> None:
        self.cancel.set()  # nobody is watching: start no further replay (the current one ends)

    def action_stop(self) -> None:
        if not self.done:
            self.cancel.set()
            self._progress()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="progress")
        yield DataTable(id="replays", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="diff-pane", classes="pane", can_maximize=True) as pane:
            pane.border_title = "raw output: before -> after"
            yield Static(id="raw-diff")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#replays", DataTable).add_columns("instance", "before", "after")
        self._progress()
        self._run()

    @work(thread=True, exclusive=True, group="replay-step", exit_on_error=False)
    def _run(self) -> None:
        outcome = actions.replay_step(
            self.step, lambda result: self.app.call_from_thread(self._add, result), cancel=self.cancel
        )
        self.app.call_from_thread(self._finished, outcome)

    def _finished(self, outcome: actions.Outcome) -> None:
        self.done = True
        self._progress()
        if not outcome.ok:
            self.app.push_screen(ActionFailed("the replays stopped", outcome.message, outcome.action))

    def _add(self, result: StepReplay) -> None:
        self.results[result.instance_id] = result
        style = "green" if result.after == "completed" else "red"
        self.query_one("#replays", DataTable).add_row(
            result.instance_id[:12], result.before, Text(result.after, style=style), key=result.instance_id
        )
        self._progress()
        if len(self.results) == 1:
            self.query_one("#raw-diff", Static).update(raw_diff(result.old_raw, result.new_raw))

    def _progress(self) -> None:
        passed = sum(1 for r in self.results.values() if r.after == "completed")
        if self.done and self.cancel.is_set() and len(self.results) < self.total:
            state = f"stopped: the other {self.total - len(self.results)} stay as they were"
        elif self.done:
            state = "done"
        elif self.cancel.is_set():
            state = "stopping after the current instance…"
        else:
            state = "replaying… (x stops)"
        self.query_one("#progress", Static).update(
            Text(
                f"{self.step}: {len(self.results)}/{self.total} replayed, {state}  "
                f"before: 0 passed  after: {passed} passed, {len(self.results) - passed} still stopped"
            )
        )

    @on(DataTable.RowHighlighted, "#replays")
    def _show(self, event: DataTable.RowHighlighted) -> None:
        result = self.results.get(event.row_key.value or "")
        if result is not None:
            self.query_one("#raw-diff", Static).update(raw_diff(result.old_raw, result.new_raw))
