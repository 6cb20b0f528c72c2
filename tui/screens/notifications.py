"""Every message sent to owners about stopped instances, and whether it was delivered."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from storage.store import Store
from tui.literal import literal
from tui.screens.error import guarded
from tui.tables import refill, refresh_while_shown

__all__ = ["NotificationsScreen"]


class NotificationsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="back", tooltip="Back to the instances"),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the notifications again"),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.instance_of: dict[str, str] = {}
        """Each notification row's instance (rows are keyed by notification)."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "No notifications yet. An instance's owner is told when it pauses or needs review, "
            "through the Apprise URLs under [notify] in the catalog (stepline.toml): with none "
            "there, nothing is sent.",
            id="notifications-empty",
            markup=False,
        )
        yield DataTable(id="notifications", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#notifications", DataTable)
        table.add_columns("sent (UTC)", "event", "instance", "delivered", "target")
        self.action_reload()
        table.focus()
        refresh_while_shown(self, self.action_reload)

    @guarded("the notifications could not be read")
    def action_reload(self) -> None:
        notes = self.store.notifications()
        self.instance_of = {note.id: note.instance_id for note in notes}
        rows = [
            (
                note.id,  # an instance may have several notifications
                (
                    note.created_at.strftime("%m-%d %H:%M"),
                    note.event,
                    note.instance_id[:8],
                    Text("yes", style="green")
                    if note.delivered
                    else literal(f"no: {note.error or ''}", style="red"),
                    literal(note.target),
                ),
            )
            for note in notes
        ]
        refill(self.query_one("#notifications", DataTable), rows)
        self.query_one("#notifications-empty", Static).display = not rows

    @on(DataTable.RowSelected, "#notifications")
    @guarded("the instance could not be opened")
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.instance import InstanceScreen

        instance_id = self.instance_of.get(event.row_key.value or "")
        if instance_id is not None:
            self.app.push_screen(InstanceScreen(self.store, instance_id))
