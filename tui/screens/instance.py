"""One instance: what it was given, where it stopped, and every attempt of every step."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from storage.models import as_utc
from storage.store import Store
from tui import actions
from tui.literal import literal
from tui.screens.error import ActionFailed
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


class InstanceScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="back", tooltip="Back to the instances"),
        Binding("f", "first_failure", "Failure", id="first-failure", tooltip="Open the first failed attempt"),
        Binding("R", "replay", "Replay", id="replay", tooltip="Rerun from the failed step"),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the instance again", show=False),
    ]

    def __init__(self, store: Store, instance_id: str) -> None:
        super().__init__()
        self.store = store
        self.instance_id = instance_id

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="summary")
        yield DataTable(id="attempts", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#attempts", DataTable)
        table.add_columns(
            "gen", "step", "#", "model", "result", "tokens", "cost $", "ms", "sampling", "routing"
        )
        self.refresh_detail()
        table.focus()
        refresh_while_shown(self, self.refresh_detail)

    def action_reload(self) -> None:
        self.refresh_detail()

    def action_replay(self) -> None:
        self.notify(f"replaying {self.instance_id[:12]} from its failed step…")
        self._replay()

    @work(thread=True, exclusive=True, group="replay", exit_on_error=False)
    def _replay(self) -> None:
        outcome = actions.replay(self.instance_id)
        self.app.call_from_thread(self._replayed, outcome)

    def _replayed(self, outcome: actions.Outcome) -> None:
        if outcome.ok:
            self.notify(outcome.message, timeout=8)
        else:
            self.app.push_screen(ActionFailed("the replay did not complete", outcome.message, outcome.action))
        self.refresh_detail()

    def refresh_detail(self) -> None:
        detail = self.store.instance_detail(self.instance_id)
        summary = self.query_one("#summary", Static)
        table = self.query_one("#attempts", DataTable)
        keys = list(table.rows)
        at = keys[table.cursor_row].value if 0 <= table.cursor_row < len(keys) else None
        table.clear()
        if detail is None:
            summary.update(Text(f"instance {self.instance_id} is gone"))
            return
        inst = detail.instance
        lines = Text()
        lines.append(f"{inst.workflow} {inst.id}  ", style="bold")
        lines.append(f"{inst.status}", style="red" if inst.failure_class else "green")
        lines.append(f"  owner {inst.owner}  generation {inst.generation}\n")
        if inst.held and inst.worker:
            lines.append("running on " if inst.status == "running" else "queued, leased by ")
            lines.append_text(literal(inst.worker))
            lines.append(f", lease renewed {_age(inst.heartbeat_at)}\n")
        if inst.source:
            lines.append("input from ")
            lines.append_text(literal(inst.source))
            lines.append("\n")
        if inst.failed_step:
            lines.append(f"stopped at {inst.failed_step}: {inst.failure_class}: ")
            lines.append_text(literal(inst.error))
            lines.append("\n")
        lines.append("input ")
        lines.append_text(literal(json.dumps(inst.input, ensure_ascii=False)[:300]))
        if inst.output is not None:
            lines.append("\noutput ", style="green")
            lines.append_text(literal(json.dumps(inst.output, ensure_ascii=False)[:300]))
        summary.update(lines)
        # Attempts in the order they were made, each with the generation (the run, or the Nth
        # replay) it belongs to: after a replay, numbering starts again at 1 in the new generation.
        generation = {run.id: run.generation for run in detail.step_runs}
        for attempt in detail.attempts:
            table.add_row(
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
                key=attempt.id,
            )
        ids = [attempt.id for attempt in detail.attempts]
        if at in ids:  # a refresh keeps the cursor on the attempt it was on
            table.move_cursor(row=ids.index(at), animate=False)

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
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.attempt import AttemptScreen

        if event.row_key.value is not None:
            self.app.push_screen(AttemptScreen(self.store, self.instance_id, event.row_key.value))


def _age(when: datetime | None) -> str:
    if when is None:
        return "never"
    return f"{(datetime.now(UTC) - as_utc(when)).total_seconds():.0f} s ago"
