"""One line that says what a long action is doing now: which step runs, for how long, how to stop.

An approval or a replay runs the instance's remaining steps, which can take a
minute against a slow provider; "deciding..." alone left the operator
guessing. The action's worker thread reports each step as it starts
(``on_step``), the line ticks every second, and ``x`` sets the ``cancel``
event the run checks before each step.
"""

from __future__ import annotations

import threading
import time

from rich.text import Text
from textual.timer import Timer
from textual.widgets import Static

__all__ = ["ActionProgress"]


class ActionProgress(Static):
    """Hidden while idle; while an action runs, ``label: <step> for N s; x stops ...``."""

    DEFAULT_CSS = """
    ActionProgress {
        height: auto;
        padding: 0 1;
        color: $accent;
        display: none;
    }
    ActionProgress.-running {
        display: block;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cancel = threading.Event()
        self.label = ""
        self.step = ""
        self.started = 0.0
        self._ticker: Timer | None = None

    @property
    def running(self) -> bool:
        return self.has_class("-running")

    def begin(self, label: str) -> threading.Event:
        """Show ``label`` and start the clock; the returned event is what ``x`` sets."""
        self.cancel = threading.Event()
        self.label, self.step, self.started = label, "", time.monotonic()
        self.add_class("-running")
        self._ticker = self.set_interval(1, self._paint)
        self._paint()
        return self.cancel

    def on_step(self, step: str) -> None:
        """Called from the action's worker thread as each step starts."""
        self.app.call_from_thread(self._at, step)

    def _at(self, step: str) -> None:
        self.step = step
        self._paint()

    def stop(self) -> bool:
        """Ask the run to pause before its next step; False when nothing runs."""
        if not self.running or self.cancel.is_set():
            return False
        self.cancel.set()
        self._paint()
        return True

    def end(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self.remove_class("-running")

    def _paint(self) -> None:
        seconds = time.monotonic() - self.started
        where = f"running {self.step}" if self.step else "starting"
        then = (
            "stopping before the next step…" if self.cancel.is_set() else "x pauses it before its next step"
        )
        self.update(Text(f"{self.label}: {where}, {seconds:.0f} s; {then}"))
