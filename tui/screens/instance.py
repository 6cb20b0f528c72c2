"""One instance: what it was given, where it stopped, and every attempt of every step."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from storage.models import WorkflowInstance, as_utc
from storage.store import Store
from tui import actions
from tui.fold import FOLD_BINDING, Fold
from tui.literal import literal
from tui.progress import ActionProgress
from tui.screens.error import ActionFailed, guarded
from tui.tables import refresh_while_shown

__all__ = ["InstanceScreen"]


def _sampling(sent: Any) -> str:
    """``t=0 p=1 max=1024``: what was sent, compactly."""
    if not isinstance(sent, dict):
        return ""
    short = {"temperature": "t", "top_p": "p", "max_tokens": "max"}
    return " ".join(
        f"{short.get(k, k)}={v:g}" if isinstance(v, float) else f"{short.get(k, k)}={v}"
        for k, v in sent.items()
    )


_COLUMNS = ("gen", "step", "#", "model", "result", "tokens", "cost $", "ms", "sampling", "routing")
_WIDE_AT = 120
"""Terminal width from which the attempts table has room for sampling and routing."""


class InstanceScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="back", tooltip="Back to the instances"),
        Binding("f", "first_failure", "Failure", id="first-failure", tooltip="Open the first failed attempt"),
        Binding("R", "replay", "Replay", id="replay", tooltip="Rerun from the failed step"),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the instance again", show=False),
        Binding(
            "x",
            "stop",
            "Stop",
            id="stop",
            tooltip="Pause the replay before its next step (a replay goes on from there)",
        ),
        FOLD_BINDING,
    ]

    def __init__(self, store: Store, instance_id: str) -> None:
        super().__init__()
        self.store = store
        self.instance_id = instance_id
        self.columns: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Fold(id="summary")
        yield ActionProgress(id="progress")
        yield DataTable(id="attempts", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self._set_columns(self.app.size.width)
        self.query_one("#attempts", DataTable).focus()
        refresh_while_shown(self, self.refresh_detail)

    def on_resize(self, event: events.Resize) -> None:
        if self._columns(event.size.width) != self.columns:
            self._set_columns(event.size.width)

    @staticmethod
    def _columns(width: int) -> tuple[str, ...]:
        """Sampling and routing only where they fit whole; the attempt's header has them too."""
        return _COLUMNS if width >= _WIDE_AT else _COLUMNS[:-2]

    def _set_columns(self, width: int) -> None:
        self.columns = self._columns(width)
        table = self.query_one("#attempts", DataTable)
        table.clear(columns=True)
        table.add_columns(*self.columns)
        self.refresh_detail()

    def action_reload(self) -> None:
        self.refresh_detail()

    def action_toggle_fold(self) -> None:
        self.query_one("#summary", Fold).toggle()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":  # in the footer only while a replay runs
            return self.query_one("#progress", ActionProgress).running
        return True

    @guarded("the replay did not start")
    def action_replay(self) -> None:
        progress = self.query_one("#progress", ActionProgress)
        if progress.running:
            self.notify("a replay of this instance is running already")
            return
        self._replay(progress.begin(f"replaying {self.instance_id[:12]}"), progress.on_step)
        self.refresh_bindings()

    def action_stop(self) -> None:
        self.query_one("#progress", ActionProgress).stop()

    @work(thread=True, exclusive=True, group="replay", exit_on_error=False)
    def _replay(self, cancel: threading.Event, on_step: Callable[[str], None]) -> None:
        outcome = actions.replay(self.instance_id, on_step=on_step, cancel=cancel)
        self.app.call_from_thread(self._replayed, outcome)

    def _replayed(self, outcome: actions.Outcome) -> None:
        self.query_one("#progress", ActionProgress).end()
        self.refresh_bindings()
        if outcome.ok or outcome.interrupted:  # a stop asked for is no failure
            self.notify(outcome.message + (f"; {outcome.action}" if outcome.interrupted else ""), timeout=8)
        else:
            self.app.push_screen(ActionFailed("the replay did not complete", outcome.message, outcome.action))
        self.refresh_detail()

    @guarded("the instance could not be read")
    def refresh_detail(self) -> None:
        detail = self.store.instance_detail(self.instance_id)
        summary = self.query_one("#summary", Fold)
        table = self.query_one("#attempts", DataTable)
        keys = list(table.rows)
        at = keys[table.cursor_row].value if 0 <= table.cursor_row < len(keys) else None
        table.clear()
        if detail is None:
            summary.show(Text(f"instance {self.instance_id} is gone"))
            return
        summary.show(_summary(detail.instance))
        # Attempts in the order they were made, each with the generation (the run, or the Nth
        # replay) it belongs to: after a replay, numbering starts again at 1 in the new generation.
        generation = {run.id: run.generation for run in detail.step_runs}
        for attempt in detail.attempts:
            cells = (
                str(generation.get(attempt.step_run_id, "")),
                literal(attempt.step),
                str(attempt.attempt_number),
                attempt.model_id,
                Text(attempt.outcome, style="green" if attempt.outcome == "ok" else "red"),
                f"{attempt.tokens_in or 0}/{attempt.tokens_out or 0}",
                f"{attempt.cost_usd or 0:.6f}",
                f"{attempt.latency_ms or 0:.0f}",
                _sampling(attempt.sampling),
                literal(attempt.routing_reason or ""),
            )
            table.add_row(*cells[: len(self.columns)], key=attempt.id)
        ids = [attempt.id for attempt in detail.attempts]
        if at in ids:  # a refresh keeps the cursor on the attempt it was on
            table.move_cursor(row=ids.index(at), animate=False)

    @guarded("the attempts could not be read")
    def action_first_failure(self) -> None:
        detail = self.store.instance_detail(self.instance_id)
        table = self.query_one("#attempts", DataTable)
        for row, attempt in enumerate(detail.attempts if detail else []):
            if attempt.failure_class:
                from tui.screens.attempt import AttemptScreen

                table.move_cursor(row=row)  # where escape comes back to
                self.app.push_screen(AttemptScreen(self.store, self.instance_id, attempt.id))
                return
        self.notify("no failed attempt in this instance")

    @on(DataTable.RowSelected, "#attempts")
    @guarded("the attempt could not be opened")
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.attempt import AttemptScreen

        if event.row_key.value is not None:
            self.app.push_screen(AttemptScreen(self.store, self.instance_id, event.row_key.value))


def _summary(inst: WorkflowInstance) -> Text:
    """The header, most telling line first: folded, the first three are what shows."""
    head = Text()
    head.append(f"{inst.workflow}  ", style="bold")
    head.append(f"{inst.status}", style="red" if inst.failure_class else "green")
    head.append(f"  generation {inst.generation}  owner {inst.owner}  id {inst.id}")
    lines = [head]
    if inst.failed_step:
        lines.append(Text(f"stopped at {inst.failed_step}: {inst.failure_class}: ") + literal(inst.error))
    if inst.output is not None:
        output = Text("output ", style="green")
        lines.append(output + literal(json.dumps(inst.output, ensure_ascii=False)[:2000]))
    given = Text("input ")
    if inst.source:
        given += Text("from ") + literal(inst.source) + Text(" ")
    lines.append(given + literal(json.dumps(inst.input, ensure_ascii=False)[:2000]))
    if inst.held and inst.worker:
        where = "running on " if inst.status == "running" else "queued, leased by "
        lines.append(Text(where) + literal(inst.worker) + Text(f", lease renewed {_age(inst.heartbeat_at)}"))
    return Text("\n").join(lines)


def _age(when: datetime | None) -> str:
    if when is None:
        return "never"
    return f"{(datetime.now(UTC) - as_utc(when)).total_seconds():.0f} s ago"
