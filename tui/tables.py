"""Refilling a table in place, as live refresh does: the operator's cursor and scroll stay put."""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import DataTable

__all__ = ["Row", "refill"]

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
