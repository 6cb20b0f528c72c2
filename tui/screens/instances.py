"""Every instance, newest first, filtered and searched, loaded a page at a time."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Select, Static

from storage.models import InstanceStatus, WorkflowInstance
from storage.store import Store
from tui.literal import literal
from tui.tables import refill, refresh_while_shown

__all__ = ["PAGE", "InstancesScreen", "parse_search"]

PAGE = 200
"""Rows fetched per query; the next page loads when the cursor nears the end."""


_KEYS = {"workflow": "workflow", "step": "step", "failure": "failure_class", "status": "status"}
_AGE = re.compile(r"^(\d+)([mhd])$")


def parse_search(query: str) -> dict[str, Any]:
    """``workflow:x step:y failure:z status:paused since:2h`` filters; other words are searched."""
    filters: dict[str, Any] = {}
    words = []
    for word in query.split():
        key, _, value = word.partition(":")
        if key in _KEYS and value:
            filters[_KEYS[key]] = value
        elif key == "since" and (age := _AGE.match(value)):
            unit = {"m": "minutes", "h": "hours", "d": "days"}[age.group(2)]
            filters["since"] = datetime.now(UTC) - timedelta(**{unit: int(age.group(1))})
        else:
            words.append(word)
    if words:
        filters["text"] = " ".join(words)
    return filters


class InstancesScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search", id="search", tooltip="Search id, workflow, step, error"),
        # Off the footer so that it fits 80 columns whole; ``?`` lists them with the rest.
        Binding("s", "focus_status", "Status", id="status", tooltip="Filter by status", show=False),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the database again", show=False),
        Binding("v", "reviews", "Reviews", id="reviews", tooltip="Outputs waiting for a person"),
        Binding("p", "prompts", "Prompts", id="prompts", tooltip="Edit a step's prompt"),
        Binding("n", "notifications", "Notified", id="notifications", tooltip="Messages sent to owners"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.loaded = 0
        self.exhausted = False
        self.updated_at: float | None = None
        self.live = False
        """Whether it re-reads on its own (``[tui] refresh_s``)."""
        """When the rows were last read (monotonic), shown as "updated N s ago" with live refresh."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filters"):
            yield Input(placeholder="/ search; or workflow: step: failure: status: since:2h", id="search")
            yield Select(
                [(status.value, status.value) for status in InstanceStatus],
                prompt="any status",
                id="status",
            )
            yield Static("", id="updated")
        yield DataTable(id="instances", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#instances", DataTable)
        table.add_columns("id", "workflow", "status", "failed step", "failure", "created (UTC)")
        table.focus()
        self.reload()
        self.live = refresh_while_shown(self, self._refetch)
        self.query_one("#updated", Static).display = self.live
        if self.live:
            self.set_interval(1.0, self._show_age)

    @work(thread=True, exclusive=True, group="refresh", exit_on_error=False)
    def _refetch(self) -> None:
        """Re-read the rows already shown, in place: the cursor, scroll and filter stay."""
        filters = self._filters()
        limit = max(self.loaded, PAGE)
        rows = self.store.search_instances(**filters, offset=0, limit=limit)
        self.app.call_from_thread(self._replace_rows, rows, limit, self.loaded)

    def _replace_rows(self, rows: list[WorkflowInstance], limit: int, loaded: int) -> None:
        if loaded != self.loaded:  # a reload or a page load landed meanwhile
            return
        table = self.query_one("#instances", DataTable)
        refill(table, [(row.id, _cells(row)) for row in rows])
        self.loaded = len(rows)
        self.exhausted = len(rows) < limit
        self._stamp()

    def _stamp(self) -> None:
        self.updated_at = time.monotonic()
        self._show_age()

    def _show_age(self) -> None:
        if self.updated_at is not None and self.live:
            age = time.monotonic() - self.updated_at
            self.query_one("#updated", Static).update(f"updated {age:.0f} s ago")

    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_focus_status(self) -> None:
        self.query_one("#status", Select).focus()

    def action_focus_table(self) -> None:
        self.query_one("#instances", DataTable).focus()

    def action_reload(self) -> None:
        self.reload()

    def action_reviews(self) -> None:
        from tui.screens.reviews import ReviewsScreen

        self.app.push_screen(ReviewsScreen(self.store))

    def action_notifications(self) -> None:
        from tui.screens.notifications import NotificationsScreen

        self.app.push_screen(NotificationsScreen(self.store))

    def action_prompts(self) -> None:
        from tui.screens.prompts import PromptsScreen

        self.app.push_screen(PromptsScreen(self.store))

    def on_screen_resume(self) -> None:
        self.reload()  # a review or replay elsewhere may have moved things on

    @on(Input.Submitted, "#search")
    @on(Select.Changed, "#status")
    def _filters_changed(self) -> None:
        self.reload()
        self.action_focus_table()

    def reload(self) -> None:
        self.query_one("#instances", DataTable).clear()
        self.loaded = 0
        self.exhausted = False
        self._load_page()

    def _filters(self) -> dict[str, Any]:
        found = parse_search(self.query_one("#search", Input).value)
        status = self.query_one("#status", Select).value
        if isinstance(status, str):
            found["status"] = status
        return found

    @work(thread=True, exclusive=True, group="page", exit_on_error=False)
    def _load_page(self) -> None:
        """Fetch the next page off the UI thread; the table grows when it arrives."""
        filters = self._filters()
        offset = self.loaded
        rows = self.store.search_instances(**filters, offset=offset, limit=PAGE)
        self.app.call_from_thread(self._add_rows, offset, rows)

    def _add_rows(self, offset: int, rows: list[WorkflowInstance]) -> None:
        if offset != self.loaded:  # a reload started meanwhile
            return
        table = self.query_one("#instances", DataTable)
        for row in rows:
            table.add_row(*_cells(row), key=row.id)
        self.loaded += len(rows)
        self.exhausted = len(rows) < PAGE
        if offset == 0:
            self._stamp()

    @on(DataTable.RowHighlighted, "#instances")
    def _maybe_more(self, event: DataTable.RowHighlighted) -> None:
        if not self.exhausted and event.cursor_row >= self.loaded - PAGE // 2:  # fetch ahead
            self._load_page()

    @on(DataTable.RowSelected, "#instances")
    def _open(self, event: DataTable.RowSelected) -> None:
        from tui.screens.instance import InstanceScreen

        if event.row_key.value is not None:
            self.app.push_screen(InstanceScreen(self.store, event.row_key.value))


def _cells(row: WorkflowInstance) -> tuple[Any, ...]:
    return (
        row.id[:12],
        literal(row.workflow),
        row.status,
        literal(row.failed_step or ""),
        row.failure_class or "",
        row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
    )
