"""The baseline of the TUI's first paint: a bare Textual app showing the newest 200 instances.

Not a benchmark itself: ``bench/tui_first_paint.py`` starts it beside ``stepline tui``. It is
what any TUI over this database has to do before its first rows are on screen, and nothing
more: import Textual, read 200 rows with the standard library's ``sqlite3`` (read-only), and
show them in a ``DataTable`` between a ``Header`` and a ``Footer``.

    uv run python bench/bare_tui.py DATABASE_FILE

Given ``STEPLINE_TUI_PAINTED=<file>``, it writes ``time.monotonic()`` to that file once the rows
are painted, as ``stepline tui`` does.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import ClassVar

from textual.app import App, ComposeResult  # noqa: TID251 (the baseline TUI)
from textual.widgets import DataTable, Footer, Header  # noqa: TID251

QUERY = (
    "SELECT id, workflow, status, failed_step, failure_class, created_at "
    "FROM workflow_instance ORDER BY created_at DESC LIMIT 200"
)


class Bare(App[None]):
    BINDINGS: ClassVar = [("q", "quit", "Quit")]

    def __init__(self, database: Path) -> None:
        super().__init__()
        self.database = database

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        connection = sqlite3.connect(f"{self.database.as_uri()}?mode=ro", uri=True)
        try:
            rows = connection.execute(QUERY).fetchall()
        finally:
            connection.close()
        table = self.query_one(DataTable)
        table.add_columns("id", "workflow", "status", "failed step", "failure", "created (UTC)")
        for id_, workflow, status, step, failure, created in rows:
            table.add_row(id_[:12], workflow, status, step or "", failure or "", created[:19], key=id_)
        table.focus()
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        marker = os.environ.get("STEPLINE_TUI_PAINTED")
        if marker:
            Path(marker).write_text(f"{time.monotonic()}\n")


if __name__ == "__main__":
    Bare(Path(sys.argv[1]).resolve()).run()
