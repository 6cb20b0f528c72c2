"""Client-side rate limits per model, shared by every step in this process.

Written by hand: the libraries at hand either do not block (``limits`` only
answers "allowed now?") or cover a single rule, while one gate here combines
a concurrency cap, evenly spaced requests per minute, a tokens-per-minute
budget and a pause that a provider's ``retry-after`` imposes on *every*
caller of the model, not only the one that got the 429, and a trip that takes
the model out of service for every caller once its quota is spent. These
limits hold within one process; ``flows.shared_limits`` implements the same
``Gate`` on Prefect's global concurrency limits, which hold across workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

__all__ = ["Gate", "ModelGate"]


class Gate(Protocol):
    """Admission control for one model, whatever holds the counts."""

    def slot(self) -> AbstractContextManager[None]:
        """Hold one of the model's concurrent-request slots around a call."""
        ...

    def wait_turn(self, tokens: int = 0) -> float:
        """Block until a request of about ``tokens`` may be sent; the seconds waited."""
        ...

    def pause(self, seconds: float) -> None:
        """Hold callers of this model for ``seconds`` (a provider's retry-after)."""
        ...

    def trip(self, reason: str, seconds: float) -> None:
        """Take the model out of service for every caller for ``seconds`` (a spent quota)."""
        ...

    def tripped(self) -> str | None:
        """Why the model is out of service now, or None."""
        ...


class ModelGate:
    """Admission control for one model: ``slot()`` around a call, ``wait_turn()`` per request."""

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._spacing = 60.0 / rpm if rpm else 0.0
        self._seconds_per_token = 60.0 / tpm if tpm else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_request = 0.0
        self._next_tokens = 0.0
        self._paused_until = 0.0
        self._tripped: tuple[float, str] | None = None

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the model's concurrent-request slots (if it has a cap)."""
        if self._slots is None:
            yield
            return
        with self._slots:
            yield

    def wait_turn(self, tokens: int = 0) -> float:
        """Block until a request of about ``tokens`` may be sent; the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                ready = max(self._next_request, self._next_tokens, self._paused_until)
                if ready <= now:
                    # Keep to the schedule: a caller that woke a little after its turn (sleeps
                    # overshoot under load) does not push every later turn back, which would
                    # leave a steady stream short of the rpm; after a quiet spell it starts afresh.
                    late = now - self._next_request
                    self._next_request = (self._next_request if late < self._spacing else now) + self._spacing
                    self._next_tokens = max(now, self._next_tokens) + tokens * self._seconds_per_token
                    return waited
            self._sleep(ready - now)
            waited += ready - now

    def pause(self, seconds: float) -> None:
        """Hold every caller of this model for ``seconds`` (a provider's retry-after)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def trip(self, reason: str, seconds: float) -> None:
        """Take the model out of service for every caller for ``seconds`` (a spent quota)."""
        with self._lock:
            self._tripped = (self._clock() + seconds, reason)

    def tripped(self) -> str | None:
        """Why the model is out of service now, or None once the cool-down has passed."""
        with self._lock:
            if self._tripped is None:
                return None
            until, reason = self._tripped
            left = until - self._clock()
            if left <= 0:
                self._tripped = None
                return None
            return f"{reason}; out of service for {left:.0f} s more, or until this process restarts"
