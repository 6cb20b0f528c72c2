"""Tables: live refresh (a screen re-reads on a timer and refills its table in place, so that
the operator's cursor and scroll stay put), and columns fitted to the terminal's width."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from textual.screen import Screen
from textual.widgets import DataTable

__all__ = ["Row", "fit_columns", "refill", "refresh_while_shown"]

Row = tuple[str, Sequence[object]]
"""A row's key (an id) and its cells, in the table's column order."""


def refill(table: DataTable[object], rows: Sequence[Row]) -> None:
    """Show exactly ``rows``: cells that changed are updated where the rows are the same ones;
    otherwise the table is rebuilt with the cursor on the row it was on (by key) and the same
    scroll, so a refresh never moves what the operator was looking at."""
    shown = [key.value for key in table.rows]
    keys = [key for key, _ in rows]
    columns = list(table.columns)
    if keys == shown:
        for key, cells in rows:
            for column, value in zip(columns, cells, strict=True):
                if table.get_cell(key, column) != value:
                    table.update_cell(key, column, value)
        return
    at = shown[table.cursor_row] if 0 <= table.cursor_row < len(shown) else None
    scroll = table.scroll_y
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if at in keys:
        table.move_cursor(row=keys.index(at), animate=False, scroll=False)
    table.scroll_to(y=scroll, animate=False)


def refresh_while_shown(screen: Screen[Any], reload: Callable[[], object]) -> bool:
    """Call ``reload`` every ``[tui] refresh_s`` seconds (the app's ``refresh_s``) while
    ``screen`` is in front: a screen above it refreshes itself. False when refresh is off."""
    refresh_s = getattr(screen.app, "refresh_s", None)
    if not refresh_s:
        return False

    def tick() -> None:
        if screen.app.screen is screen:
            reload()

    screen.set_interval(refresh_s, tick)
    return True


def fit_columns(
    columns: Sequence[tuple[int, int]], available: int, *, core: int, padding: int = 2
) -> list[int]:
    """Each column's width within ``available`` cells (0: left out), for ``columns`` given as
    ``(least, natural)`` widths in order of importance, ``padding`` cells around each.

    The first ``core`` columns are shown whenever they fit at their least width (otherwise the
    least important of them go first), and grow toward their natural width one cell at a time
    in turn, so the widest are the ones cut short. A column after the core comes in only when
    every column before it is whole and it fits at its least width.
    """
    widths = [0] * len(columns)
    used = 0
    shown = 0
    for least, natural in columns[:core]:
        need = min(least, natural) + padding
        if used + need > available:
            break
        widths[shown] = need - padding
        used += need
        shown += 1
    while shown:
        growing = [i for i in range(shown) if widths[i] < columns[i][1]]
        if not growing or used >= available:
            break
        for i in growing[: available - used]:
            widths[i] += 1
            used += 1
    for i in range(shown, len(columns)):
        if shown < core or any(widths[j] < columns[j][1] for j in range(i)):
            break
        least, natural = columns[i]
        if used + min(least, natural) + padding > available:
            break
        widths[i] = min(natural, available - used - padding)
        used += widths[i] + padding
    return widths
