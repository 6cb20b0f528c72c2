"""The one way an action's failure is shown: a modal with what happened and what to do.

A toast disappears while the operator reads the list; a failed approval or
replay deserves to be read. Escape or enter closes it and the app goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.literal import literal

__all__ = ["ActionFailed", "guarded"]

Method = TypeVar("Method", bound=Callable[..., Any])


class ActionFailed(ModalScreen[None]):
    """What failed, why (verbatim, as untrusted text) and what the operator can do about it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "close", "Close", id="close", tooltip="Back to where you were"),
    ]

    def __init__(self, title: str, message: str, action: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.action_text = action

    def compose(self) -> ComposeResult:
        with Vertical(id="failure"):
            yield Static(Text(self.title_text, style="bold red"), id="failure-title")
            yield Static(literal(self.message), id="failure-message")
            if self.action_text:
                yield Static(Text.assemble(("what to do: ", "bold"), self.action_text), id="failure-action")
            yield Static(Text("escape or enter closes", style="dim"))

    def action_close(self) -> None:
        self.dismiss()


def guarded(title: str) -> Callable[[Method], Method]:
    """A key's handler that cannot quit the app: whatever it raises (the database gone or
    locked, a bug) is shown in ``ActionFailed`` under ``title``, and the screen stays as it was.

    Textual's default is to exit on an exception in a handler; an operator's tool that has
    been open all day must not lose its place over one failed read.
    """

    def wrap(method: Method) -> Method:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                from tui.actions import describe_failure

                said = describe_failure(exc)
                self.app.push_screen(ActionFailed(title, said.message, said.action))
                return None

        return run  # type: ignore[return-value]

    return wrap
