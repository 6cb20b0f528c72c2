"""The ``stepline`` console script: ``stepline tui`` starts without typer, the rest through it.

Typer and click cost 30-40 ms to import and typer's parsing builds every command's parameters
(through pydantic) before any command runs, about 0.2 s in all; the TUI's first paint is timed
against a bare Textual app (``bench/tui_first_paint.py``), so its start path skips them.

A command's start imports Prefect, the store, the SDK and Instructor: millions of objects that
live until exit. CPython's cyclic collector runs a full pass each time the heap has grown by a
quarter, so a start walks that heap again and again: about 0.3 s of a ``stepline run``'s 2 s to
its first request (``bench/first_request.py``). So the collector is off while a command starts;
``startup_done`` (called once the command's modules are loaded, and by a timer in any case)
freezes what was built so far, so later full passes skip it, and turns the collector back on.
This is CPython's documented pattern for preloaded processes (``gc.freeze``). What it costs: a
cycle that became garbage during the start is kept until exit; the start makes few.
"""

from __future__ import annotations

import gc
import sys
import threading

__all__ = ["STARTUP_GC_SECONDS", "collector_off_while_starting", "main", "startup_done"]

STARTUP_GC_SECONDS = 10.0
"""The collector is back on after this long even if the command never said its start was over."""

_lock = threading.Lock()
_off_for_start = False
"""Whether ``collector_off_while_starting`` turned the collector off (and nothing turned it on)."""


def startup_done() -> None:
    """The command's modules are loaded: freeze them out of the collector's reach, turn it on.

    Idempotent and thread-safe; a no-op unless ``collector_off_while_starting`` turned the
    collector off (the TUI, tests, code that disabled it for reasons of its own).
    """
    global _off_for_start
    with _lock:
        if not _off_for_start:
            return
        _off_for_start = False
        gc.freeze()
        gc.enable()


def collector_off_while_starting(seconds: float = STARTUP_GC_SECONDS) -> None:
    """Turn the collector off until ``startup_done``, or for ``seconds`` at most."""
    global _off_for_start
    with _lock:
        if not gc.isenabled():
            return  # off already, by someone else: theirs to turn back on
        gc.disable()
        _off_for_start = True
    safety_net = threading.Timer(seconds, startup_done)
    safety_net.daemon = True
    safety_net.start()


def main() -> None:
    if sys.argv[1:] == ["tui"]:
        from tui.start import run

        sys.exit(run())
    collector_off_while_starting()
    from stepline.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
