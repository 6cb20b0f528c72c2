"""Prefect's API as something that can fail: bounded waits for it, and what to drop when it is gone.

Stepline's own store is the record of every instance; Prefect's API server may die mid-run
(killed, restarted, its machine gone). Two things could then hold a command for minutes after
its work is done:

- recording a flow run's final state: Prefect's client retries a server it has reached before
  five times with exponential backoff, about a minute per call;
- its event and log workers, which at interpreter exit send their whole backlog, each item
  with the same retries (seen: 300 items, half an hour).

So a flow call runs in a thread of its own (``call``). Once Stepline's work inside it is done,
Prefect gets ``FINAL_STATE_GRACE_S`` to record the end; past that the call is abandoned and
``LOST`` is set. A command that sees ``LOST`` gives Prefect's workers a deadline to send what
they hold (``settle``), drops the rest, and ends without waiting for them.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["FINAL_STATE_GRACE_S", "LOST", "Abandoned", "call", "settle"]

T = TypeVar("T")

LOST = threading.Event()
"""Set once Prefect's API failed this process: a flow call was abandoned or raised for it."""

FINAL_STATE_GRACE_S = 10.0
"""How long Prefect may take to record a flow run's end once Stepline's work in it is done: a
healthy server takes milliseconds, a loaded local one a few seconds of 503 retries."""


class Abandoned(Exception):
    """The flow call was left to Prefect's retries: Stepline's work in it was done, and Prefect
    did not record the end within the grace period."""


def call(
    flow_call: Callable[[], T],
    done: threading.Event,
    grace_s: float = FINAL_STATE_GRACE_S,
    stop: threading.Event | None = None,
    on_interrupt: Callable[[], bool] | None = None,
) -> T:
    """``flow_call()`` in a thread of its own (this context's variables with it), waited for
    while Stepline's work in it runs and ``grace_s`` after ``done`` is set; then ``Abandoned``.

    The wait is in short slices, so Ctrl-C reaches the calling thread at once; ``stop`` (an
    operator's stop) ends the grace period at once too. A Ctrl-C while the work still runs goes
    to ``on_interrupt``: the work runs in the other thread, so only the caller can act on it
    (stop starting new work, pause what runs); True keeps waiting, False re-raises.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    finished = threading.Event()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.append(context.run(flow_call))
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            finished.set()

    threading.Thread(target=run, name="stepline-flow-call", daemon=True).start()
    while True:
        try:
            while not finished.wait(0.1):
                if done.is_set() and not _finished_within(finished, grace_s, stop):
                    LOST.set()
                    raise Abandoned(f"Prefect's API did not record the flow run's end within {grace_s:.0f} s")
            break
        except KeyboardInterrupt:
            if done.is_set():  # stopped while waiting for Prefect alone: as good as lost
                LOST.set()
                raise
            if on_interrupt is None or not on_interrupt():
                raise
    if failure:
        raise failure[0]
    return outcome[0]


def _finished_within(finished: threading.Event, grace_s: float, stop: threading.Event | None) -> bool:
    waited = 0.0
    while waited < grace_s:
        if finished.wait(0.1):
            return True
        if stop is not None and stop.is_set():
            return False
        waited += 0.1
    return finished.is_set()


def settle(deadline_s: float) -> None:
    """Give Prefect's event and log workers ``deadline_s`` to send what they hold, then stop
    waiting: what is left is dropped with the process."""
    import sys

    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=deadline_s / 2, at_exit=False)
    APILogWorker.drain_all(timeout=deadline_s / 2, at_exit=False)
