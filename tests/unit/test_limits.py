"""The per-model gate: evenly spaced requests, a shared pause, a concurrency cap."""

from __future__ import annotations

import threading
import time

from steps.limits import ModelGate


def test_requests_per_minute_are_spaced_evenly() -> None:
    gate = ModelGate(rpm=600)  # one request every 0.1 s
    start = time.monotonic()
    waits = [gate.wait_turn() for _ in range(5)]
    assert time.monotonic() - start >= 0.4 - 0.01
    assert waits[0] == 0.0
    assert all(w > 0 for w in waits[1:])


def test_a_steady_stream_keeps_the_full_rpm_when_sleeps_overshoot() -> None:
    """Each sleep here wakes 15 ms late (a loaded machine): the turns keep their 0.1 s schedule
    instead of drifting to 0.115 s, and no window of 1 s ever holds more than 10 + 1 turns."""
    now = [0.0]

    def oversleep(seconds: float) -> None:
        now[0] += seconds + 0.015

    gate = ModelGate(rpm=600, clock=lambda: now[0], sleep=oversleep)
    granted = []
    for _ in range(101):
        gate.wait_turn()
        granted.append(now[0])
    assert granted[-1] < 10.0 + 0.1  # 100 spacings, not 100 x 0.115 = 11.5 s
    assert max(sum(1 for t in granted if start <= t < start + 1.0) for start in granted) <= 11
    now[0] += 5.0  # a quiet spell: the next turn is at once, and the schedule starts from it
    assert gate.wait_turn() == 0.0
    gate.wait_turn()
    assert now[0] - granted[-1] >= 5.0 + 0.1


def test_tokens_per_minute_delay_the_next_request() -> None:
    gate = ModelGate(tpm=6000)  # 100 tokens per second
    gate.wait_turn(tokens=30)
    start = time.monotonic()
    gate.wait_turn(tokens=1)
    assert time.monotonic() - start >= 0.3 - 0.01


def test_a_pause_holds_every_caller() -> None:
    gate = ModelGate()
    gate.pause(0.3)
    arrivals: list[float] = []
    start = time.monotonic()

    def caller() -> None:
        gate.wait_turn()
        arrivals.append(time.monotonic() - start)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert min(arrivals) >= 0.3 - 0.01


def test_concurrency_cap() -> None:
    gate = ModelGate(max_concurrency=2)
    inside = 0
    peak = 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal inside, peak
        with gate.slot():
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2
