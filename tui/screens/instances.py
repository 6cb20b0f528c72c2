"""Every instance, newest first, filtered and searched, loaded a page at a time.

It may open before the store: ``stepline tui`` hands it the newest page read with ``sqlite3``
(``storage.quick_read``) and opens the store after the first paint. Until then the keys that
need the store (open, search, the other lists, the next page) wait for it and then run.

The columns fit the terminal's width, at 80 columns too: the id, workflow, status, failed step,
failure and the input's source (its file name) share the width, the widest cut short with an
ellipsis; the creation time and the error join when there is room. They are fitted again on
resize and on each reload.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.geometry import Size
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Select, Static

from storage.states import InstanceStatus
from tui.literal import literal
from tui.tables import fit_columns, refill, refresh_while_shown

if TYPE_CHECKING:
    from storage.models import WorkflowInstance
    from storage.quick_read import InstanceRow
    from storage.store import Store

    Listed = WorkflowInstance | InstanceRow
    """A row of the list: from the store, or from the first page read before it opened."""

__all__ = ["PAGE", "PAINTED_ENV", "InstancesScreen", "parse_search"]

PAGE = 200
"""Rows fetched per query; the next page loads when the cursor nears the end."""

PAINTED_ENV = "STEPLINE_TUI_PAINTED"
"""Set to a file name, the list writes ``time.monotonic()`` to it once its first rows are painted
(``bench/tui_first_paint.py`` times the first paint with it); unset, nothing is written."""

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


_WIDE_ID = 12
"""The id's width once everything else is whole (8 characters tell instances apart)."""


@dataclass(frozen=True)
class _Column:
    key: str
    label: str
    least: int
    """Narrowest it is shown (cut short with an ellipsis below its content's width)."""
    most: int
    """Widest it grows, however long its values."""
    cell: Callable[[Listed], str]


def _file_name(source: str | None) -> str:
    """``inbox/acme.json`` -> ``acme.json``; ``batch.jsonl:12`` stays as it is."""
    return (source or "").replace("\\", "/").rsplit("/", 1)[-1]


_COLUMNS = (  # in order of importance: the first six whenever they fit, then as room allows
    _Column("id", "id", 8, 8, lambda row: row.id[:_WIDE_ID]),  # cut, not ellipsized: a prefix finds it
    _Column("status", "status", 12, 12, lambda row: row.status),
    _Column("workflow", "workflow", 8, 30, lambda row: row.workflow),
    _Column("step", "failed step", 8, 30, lambda row: row.failed_step or ""),
    _Column("failure", "failure", 8, 20, lambda row: row.failure_class or ""),
    _Column("source", "source", 8, 40, lambda row: _file_name(row.source)),
    _Column("created", "created (UTC)", 19, 19, lambda row: row.created_at.strftime("%Y-%m-%d %H:%M:%S")),
    _Column("error", "error", 20, 120, lambda row: (row.error or "").partition("\n")[0]),
)
_CORE = 6
_BY_KEY = {column.key: column for column in _COLUMNS}
_PLAIN = frozenset({"id", "status", "created"})
"""Cells of Stepline's own values, plain strings without markup: the id is cut at its column's
width with no ellipsis (a prefix finds it), the other two columns always fit theirs."""
_SHOWN_ORDER = ("id", "workflow", "status", "step", "failure", "source", "created", "error")
_SCROLLBAR = 2
_CHROME = 6
"""Lines that are not rows: the header, the filters (3), the column labels and the footer."""


def natural_widths(rows: Sequence[Listed]) -> list[tuple[int, int]]:
    """Each column's least width and the width its values and label take in ``rows`` (up to its most)."""
    found = []
    for column in _COLUMNS:
        longest = max((len(column.cell(row)) for row in rows), default=0)
        found.append((column.least, min(column.most, max(longest, len(column.label), 1))))
    return found


def fit(
    natural: Sequence[tuple[int, int]], width: int, *, scrollbar: bool = True
) -> tuple[tuple[str, int], ...]:
    """The columns shown in a ``width``-cell table, in order, each with its width (beside a
    vertical scrollbar when the rows will not all fit)."""
    available = max(width - (_SCROLLBAR if scrollbar else 0), 0)
    widths = dict(zip((c.key for c in _COLUMNS), fit_columns(natural, available, core=_CORE), strict=True))
    spare = available - sum(w + 2 for w in widths.values() if w)
    if (
        widths["id"]
        and spare > 0
        and all(widths[c.key] >= n for c, (_, n) in zip(_COLUMNS, natural, strict=True))
    ):
        widths["id"] += min(spare, _WIDE_ID - widths["id"])
    return tuple((key, widths[key]) for key in _SHOWN_ORDER if widths[key])


class InstancesScreen(Screen[None]):
    DEFAULT_CSS = """
    InstancesScreen #instances {
        height: 1fr;  /* the rest of the screen, not its content's height: the screen never scrolls */
    }
    """
    AUTO_FOCUS = "#instances"
    REFIT_AFTER_S = 0.1
    """How long the size must hold before the columns are fitted to it again."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search", id="search", tooltip="Search id, workflow, step, error"),
        # Off the footer so that it fits 80 columns whole; ``?`` lists them with the rest.
        Binding("s", "focus_status", "Status", id="status", tooltip="Filter by status", show=False),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the database again", show=False),
        Binding("v", "reviews", "Reviews", id="reviews", tooltip="Outputs waiting for a person"),
        Binding("p", "prompts", "Prompts", id="prompts", tooltip="Edit a step's prompt"),
        Binding("n", "notifications", "Notified", id="notifications", tooltip="Messages sent to owners"),
        Binding("escape", "focus_table", "Table", id="focus-table", tooltip="Back to the list", show=False),
    ]

    class FirstPage(Message):
        """The first page of rows is on screen (the app opens the store after it)."""

    def __init__(self, store: Store | None, first_page: Sequence[InstanceRow] | None = None) -> None:
        super().__init__()
        self.store = store
        """None until the app opens it after the first paint (``first_page`` is shown until then)."""
        self._first_page = first_page
        self._waiting: list[Callable[[], object]] = []
        """Actions asked for before the store was open, run once it is."""
        self._rows: list[Listed] = []
        """The rows shown, in order (the table is rebuilt from them when its columns change)."""
        self._columns: tuple[tuple[str, int], ...] = ()
        self._natural = natural_widths(())
        """The columns' widths as the first page of the last reload needs them."""
        self._selected: str | None = None
        self._refit: Timer | None = None
        self._painted = False
        self._resumed = False
        self.loaded = 0
        self.exhausted = False
        self.updated_at: float | None = None
        """When the rows were last read (monotonic), shown as "updated N s ago" with live refresh."""
        self.live = False
        """Whether it re-reads on its own (``[tui] refresh_s``)."""

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
        self.query_one("#updated", Static).display = False
        if self._first_page is not None:
            self._add_rows(0, list(self._first_page))
            self._first_page = None
        else:
            self.reload()
        if self.store is not None:
            self._start_live()

    def opened(self, store: Store) -> None:
        """The app opened the store: live refresh starts, and actions asked for meanwhile run."""
        self.store = store
        self._start_live()
        waiting, self._waiting = self._waiting, []
        for action in waiting:
            action()

    def _when_open(self, action: Callable[[], object]) -> None:
        if self.store is not None:
            action()
        elif action not in self._waiting:
            self._waiting.append(action)

    def _start_live(self) -> None:
        self.live = refresh_while_shown(self, self._refetch)
        self.query_one("#updated", Static).display = self.live
        if self.live:
            self.set_interval(1.0, self._show_age)
            self._show_age()

    @work(thread=True, exclusive=True, group="refresh", exit_on_error=False)
    def _refetch(self) -> None:
        """Re-read the rows already shown, in place: the cursor, scroll and filter stay."""
        assert self.store is not None  # live refresh starts once it is open
        filters = self._filters()
        limit = max(self.loaded, PAGE)
        rows = self.store.search_instances(**filters, offset=0, limit=limit)
        self.app.call_from_thread(self._replace_rows, rows, limit, self.loaded)

    def _replace_rows(self, rows: Sequence[Listed], limit: int, loaded: int) -> None:
        if loaded != self.loaded:  # a reload or a page load landed meanwhile
            return
        table = self.query_one("#instances", DataTable)
        self._rows = list(rows)
        refill(table, [(row.id, self._cells(row)) for row in rows])
        self.loaded = len(rows)
        self.exhausted = len(rows) < limit
        self._fit(self.app.size)
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
        self._when_open(self._push_reviews)

    def action_notifications(self) -> None:
        self._when_open(self._push_notifications)

    def action_prompts(self) -> None:
        self._when_open(self._push_prompts)

    def _push_reviews(self) -> None:
        from tui.screens.reviews import ReviewsScreen

        assert self.store is not None
        self.app.push_screen(ReviewsScreen(self.store))

    def _push_notifications(self) -> None:
        from tui.screens.notifications import NotificationsScreen

        assert self.store is not None
        self.app.push_screen(NotificationsScreen(self.store))

    def _push_prompts(self) -> None:
        from tui.screens.prompts import PromptsScreen

        assert self.store is not None
        self.app.push_screen(PromptsScreen(self.store))

    def on_screen_resume(self) -> None:
        if self._resumed:  # back from another screen: a review or replay may have moved things on
            self.reload()
        self._resumed = True

    def on_resize(self, event: events.Resize) -> None:
        """Fit the columns once the size settles (a window being dragged resizes it many times,
        and a refit rebuilds every loaded row)."""
        if self._refit is not None:
            self._refit.stop()
        self._refit = self.set_timer(self.REFIT_AFTER_S, lambda: self._fit(self.app.size))

    @on(Input.Submitted, "#search")
    @on(Select.Changed, "#status")
    def _filters_changed(self) -> None:
        self.reload()
        self.action_focus_table()

    def reload(self) -> None:
        self.query_one("#instances", DataTable).clear()
        self._rows = []
        self.loaded = 0
        self.exhausted = False
        self._when_open(self._load_page)

    def _filters(self) -> dict[str, Any]:
        found = parse_search(self.query_one("#search", Input).value)
        status = self.query_one("#status", Select).value
        if isinstance(status, str):
            found["status"] = status
        return found

    @work(thread=True, exclusive=True, group="page", exit_on_error=False)
    def _load_page(self) -> None:
        """Fetch the next page off the UI thread; the table grows when it arrives."""
        assert self.store is not None  # asked for through _when_open
        filters = self._filters()
        offset = self.loaded
        rows = self.store.search_instances(**filters, offset=offset, limit=PAGE)
        self.app.call_from_thread(self._add_rows, offset, rows)

    def _add_rows(self, offset: int, rows: Sequence[Listed]) -> None:
        if offset != self.loaded:  # a reload started meanwhile
            return
        table = self.query_one("#instances", DataTable)
        self._rows.extend(rows)
        if offset == 0:
            self._natural = natural_widths(rows)
        self._fit(self.app.size)
        for row in rows:
            table.add_row(*self._cells(row), key=row.id)
        self.loaded += len(rows)
        self.exhausted = len(rows) < PAGE
        if offset == 0:
            self._stamp()
            if not self._painted:
                self._painted = True
                self.call_after_refresh(self._first_page_painted)

    def _first_page_painted(self) -> None:
        table = self.query_one("#instances", DataTable)
        if table.virtual_size.height < table.row_count:  # not laid out yet: after the next refresh
            self.call_after_refresh(self._first_page_painted)
            return
        marker = os.environ.get(PAINTED_ENV)
        if marker:
            Path(marker).write_text(f"{time.monotonic()}\n")
        self.post_message(self.FirstPage())

    def _fit(self, size: Size) -> None:
        """Fit the columns to the screen's ``size``; when they change, rebuild the table with the
        cursor and the scroll kept."""
        columns = fit(self._natural, size.width, scrollbar=len(self._rows) > size.height - _CHROME)
        if columns == self._columns:
            return
        self._columns = columns
        table = self.query_one("#instances", DataTable)
        keys = [key.value for key in table.rows]
        at = keys[table.cursor_row] if 0 <= table.cursor_row < len(keys) else None
        scroll = table.scroll_y
        table.clear(columns=True)
        for key, column_width in columns:
            table.add_column(_cut(_BY_KEY[key].label), width=column_width, key=key)
        for row in self._rows[: self.loaded]:
            table.add_row(*self._cells(row), key=row.id)
        if at in keys:
            table.move_cursor(row=keys.index(at), animate=False, scroll=False)
        table.scroll_to(y=scroll, animate=False)

    def _cells(self, row: Listed) -> tuple[str | Text, ...]:
        return tuple(
            _BY_KEY[key].cell(row) if key in _PLAIN else _cut(_BY_KEY[key].cell(row))
            for key, _ in self._columns
        )

    @on(DataTable.RowHighlighted, "#instances")
    def _maybe_more(self, event: DataTable.RowHighlighted) -> None:
        if not self.exhausted and event.cursor_row >= self.loaded - PAGE // 2:  # fetch ahead
            self._when_open(self._load_page)

    @on(DataTable.RowSelected, "#instances")
    def _open(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._selected = event.row_key.value  # the last one chosen, if the store is not open yet
            self._when_open(self._push_instance)

    def _push_instance(self) -> None:
        from tui.screens.instance import InstanceScreen

        assert self.store is not None
        assert self._selected is not None
        self.app.push_screen(InstanceScreen(self.store, self._selected))


def _cut(value: str) -> Text:
    """Shown literally, on one line, cut short with an ellipsis where the column is narrower."""
    if value.isprintable():  # the usual case, and the quick one: no control character to spell out
        return Text(value, no_wrap=True, overflow="ellipsis")
    text = literal(value)
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text
