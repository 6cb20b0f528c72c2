"""A screen's header folded to its first lines, one row each, with the whole text one key away.

At 80x24 an instance's or an attempt's header (input, error, routing) took 6-14
rows and pushed what the operator came for off the screen. Folded, each of its
first ``lines`` lines gets one row, cut with an ellipsis; ``i`` unfolds it.
Textual's ``text-wrap``/``text-overflow`` styles do the cutting, so the text is
built once and never re-measured here.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.reactive import reactive
from textual.widgets import Static

__all__ = ["FOLD_BINDING", "Fold"]

FOLD_BINDING = Binding(
    "i",
    "toggle_fold",
    "Details",
    id="details",
    tooltip="The header's whole text (input, error, routing); i again folds it to its first lines",
)
"""The key a screen with a ``Fold`` binds; its ``action_toggle_fold`` calls ``Fold.toggle``."""


class Fold(Static):
    """Header text shown as its first ``lines`` lines, one row each, until unfolded."""

    DEFAULT_CSS = """
    Fold {
        height: auto;
        padding: 0 1;
    }
    Fold.-folded {
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    folded: reactive[bool] = reactive(True)

    def __init__(self, text: Text | None = None, *, lines: int = 3, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines = lines
        self.whole = text or Text()

    def on_mount(self) -> None:
        self._paint()

    def show(self, text: Text) -> None:
        self.whole = text
        self._paint()

    def toggle(self) -> None:
        self.folded = not self.folded

    def watch_folded(self) -> None:
        self._paint()

    def _paint(self) -> None:
        self.set_class(self.folded, "-folded")
        if not self.folded:
            self.update(self.whole)
            return
        self.update(Text("\n").join(self.whole.split("\n")[: self.lines]))
