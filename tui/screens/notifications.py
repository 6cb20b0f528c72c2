"""Every message sent to owners about stopped instances, and whether it was delivered."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from storage.store import Store
from tui.literal import literal

__all__ = ["NotificationsScreen"]


class NotificationsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="notifications", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#notifications", DataTable)
        table.add_columns("sent (UTC)", "event", "instance", "target", "delivered")
        for note in self.store.notifications():
            table.add_row(
                note.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                note.event,
                note.instance_id[:12],
                literal(note.target),
                Text("yes", style="green")
                if note.delivered
                else literal(f"no: {note.error or ''}", style="red"),
                key=note.instance_id,
            )
        table.focus()

    @on(DataTable.RowSelected, "#notifications")
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.instance import InstanceScreen

        if event.row_key.value is not None:
            self.app.push_screen(InstanceScreen(self.store, event.row_key.value))
