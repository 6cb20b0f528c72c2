"""The Stepline operator app: one screen per module in ``tui/screens``, one stylesheet.

It starts either on an open store, or (``stepline tui``, see ``tui.start``) on the newest
instances read without SQLAlchemy and a way to open the store, which it calls in a worker once
those rows are painted. Nothing on the way to the first paint imports SQLAlchemy, SQLModel,
the settings or Prefect (``tests/tui/test_first_paint.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from stepline.errors import StepLineError
from tui.screens.instances import InstancesScreen

if TYPE_CHECKING:
    from storage.quick_read import InstanceRow
    from storage.store import Store

__all__ = ["Opener", "StepLineApp"]

Opener = Callable[[], "tuple[Store, float | None]"]
"""Opens the store (settings, engine, migration check): the store and ``[tui] refresh_s``."""


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
    """How long after mounting (or after the store opened, if it opens later) ``warm`` starts loading
    the engine: the first paint and the store come first."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        where: str = "",
        warm: bool = False,
        refresh_s: float | None = None,
        first_page: Sequence[InstanceRow] | None = None,
        open_store: Opener | None = None,
    ) -> None:
        """Given no ``store``, the list shows ``first_page`` and ``open_store`` is called in a
        worker once it is painted (``refresh_s`` then comes from it)."""
        super().__init__()
        if store is None and (first_page is None or open_store is None):
            raise ValueError("without a store, give the first page and how to open the store")
        self.store = store
        self.sub_title = where
        self.warm = warm
        """Load the engine in the background once up (``tui.actions.warm``): ``stepline tui`` does."""
        self.refresh_s = refresh_s
        """Re-read the open list or instance this often (``[tui] refresh_s``); None: only on ``r``."""
        self.failed_to_open: str | None = None
        """Why ``open_store`` failed (one line); the app has then exited with return code 2."""
        self._first_page = first_page
        self._open_store = open_store
        self._instances: InstancesScreen | None = None

    def get_default_screen(self) -> InstancesScreen:
        """The instances list, as the base of the stack (no empty default screen under it)."""
        self._instances = InstancesScreen(self.store, self._first_page)
        self._first_page = None
        return self._instances

    def on_mount(self) -> None:
        if self.warm and self.store is not None:
            self.set_timer(self.WARM_AFTER_S, self._start_warming)

    @on(InstancesScreen.FirstPage)
    def _first_page_painted(self) -> None:
        if self.store is None and self._open_store is not None:
            self.run_worker(self._opening, name="opening the database", thread=True, exit_on_error=False)

    def _opening(self) -> None:
        """Load SQLAlchemy and the settings and open the store (the migration check included)."""
        assert self._open_store is not None
        try:
            store, refresh_s = self._open_store()
        except StepLineError as exc:  # bad settings, an unusable database: as before the first paint
            self.call_from_thread(self._not_opened, exc.message)
        else:
            self.call_from_thread(self._opened, store, refresh_s)

    def _opened(self, store: Store, refresh_s: float | None) -> None:
        self.store = store
        self.refresh_s = refresh_s
        where = store.engine.url.render_as_string(hide_password=True)
        moved = where != self.sub_title
        self.sub_title = where
        if self._instances is not None:
            self._instances.opened(store)
            if moved:  # the settings named another database than the first page came from
                self._instances.reload()
        if self.warm:
            self.set_timer(self.WARM_AFTER_S, self._start_warming)

    def _not_opened(self, message: str) -> None:
        self.failed_to_open = message
        self.exit(return_code=2)

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
            from tui.screens.error import ActionFailed

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
