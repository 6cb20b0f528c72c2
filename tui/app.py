"""The Stepline operator app: one screen per module in ``tui/screens``, one stylesheet."""

from __future__ import annotations

from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from storage.store import Store
from tui.screens.instances import InstancesScreen

__all__ = ["StepLineApp"]


class StepLineApp(App[None]):
    """Browse instances, open one, open a failed attempt beside its schema."""

    TITLE = "Stepline"
    CSS_PATH = "stepline.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave Stepline"),
    ]

    def __init__(self, store: Store, *, where: str = "") -> None:
        super().__init__()
        self.store = store
        self.sub_title = where

    def on_mount(self) -> None:
        self.push_screen(InstancesScreen(self.store))
