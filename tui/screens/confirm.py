"""A yes/no question before an action that touches many instances at once."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.literal import literal

__all__ = ["Confirm"]


class Confirm(ModalScreen[bool]):
    """Dismissed with True on ``y`` or enter, False on ``n`` or escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes", id="yes", tooltip="Go ahead"),
        Binding("n,escape", "answer(False)", "No", id="no", tooltip="Leave everything as it is"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(literal(self.question), id="confirm-question")
            yield Static(Text("y or enter: yes     n or escape: no", style="dim"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
