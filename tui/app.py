"""The Stepline operator app: one screen per module in ``tui/screens``, one stylesheet."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from storage.store import Store
from tui.screens.error import ActionFailed
from tui.screens.instances import InstancesScreen

__all__ = ["StepLineApp"]


class StepLineApp(App[None]):
    """Browse instances, open one, open a failed attempt beside its schema."""

    TITLE = "Stepline"
    CSS_PATH = "stepline.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave Stepline"),
        Binding(
            "question_mark", "toggle_help", "Help", id="help", tooltip="This screen's keys and what they do"
        ),
        Binding(
            "m",
            "toggle_maximize",
            "Maximize",
            id="maximize",
            tooltip="The focused pane or table on the whole screen; m again puts it back",
            show=False,
        ),
    ]

    WARM_AFTER_S = 0.5
    """How long after mounting ``warm`` starts loading the engine (the first paint comes first)."""

    def __init__(
        self, store: Store, *, where: str = "", warm: bool = False, refresh_s: float | None = None
    ) -> None:
        super().__init__()
        self.store = store
        self.sub_title = where
        self.warm = warm
        """Load the engine in the background once up (``tui.actions.warm``): ``stepline tui`` does."""
        self.refresh_s = refresh_s
        """Re-read the open list or instance this often (``[tui] refresh_s``); None: only on ``r``."""

    def on_mount(self) -> None:
        self.push_screen(InstancesScreen(self.store))
        if self.warm:
            self.set_timer(self.WARM_AFTER_S, self._start_warming)

    def action_toggle_help(self) -> None:
        """Textual's key panel beside the screen: every key of this screen and of the focused
        widget, with what it does; ``?`` again (or escape) closes it."""
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_toggle_maximize(self) -> None:
        """Textual's maximize, on a key: the focused pane (raw output, schema) or table."""
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
        elif screen.focused is not None:
            screen.maximize(screen.focused, container=False)  # the pane itself, not its tab set

    def _start_warming(self) -> None:
        from tui import actions

        self.run_worker(actions.warm, name="loading the engine", thread=True, exit_on_error=False)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """A worker that raised (reading the store, say) shows what failed; the app stays open.

        Every worker runs with ``exit_on_error=False``: by default Textual quits the app.
        """
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            self.push_screen(ActionFailed(f"{event.worker.name or 'a background task'} failed", message))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The screens, in the command palette (ctrl+p), beside Textual's own commands."""
        yield from super().get_system_commands(screen)
        for title, help_text, action in (
            ("Reviews", "Outputs waiting for a person", "reviews"),
            ("Prompts", "Edit a step's prompt, replay the failures", "prompts"),
            ("Notifications", "Messages sent to owners", "notifications"),
        ):
            yield SystemCommand(title, help_text, functools.partial(self._open_from_instances, action))

    def _open_from_instances(self, action: str) -> None:
        screen = next(s for s in self.screen_stack if isinstance(s, InstancesScreen))
        getattr(screen, f"action_{action}")()
