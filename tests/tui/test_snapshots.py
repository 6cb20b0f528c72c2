"""What every screen looks like at 80x24 and 160x48, compared with the SVGs in ``__snapshots__``.

The database is seeded with fixed ids, times and outputs so that a screen
only changes when the UI does. After an intended change:
``uv run pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from storage.store import Store
from tests.tui.seed import RAW, seeded
from tui.app import StepLineApp

Snap = Callable[..., bool]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from seeded(tmp_path)


async def _loaded(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def then(*keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        for key in keys:
            await pilot.press(key)
            await _loaded(pilot)

    return run


SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
"""Every screen at the smallest terminal it must fit (footer whole) and at a roomy one."""

SCREENS = {
    "instances": (),
    "help": ("question_mark",),
    "instance": ("enter",),
    "instance-details": ("enter", "i"),
    "attempt-raw": ("enter", "f"),
    "attempt-details": ("enter", "f", "i"),
    "attempt-fields": ("enter", "f", "2"),
    "attempt-request": ("enter", "f", "3"),
    "reviews": ("v",),
    "review": ("v", "enter"),
    "prompts": ("p",),
    "prompt": ("p", "enter"),
    "replay-confirm": ("p", "R"),
    "notifications": ("n",),
}


@SIZES
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare: Snap, store: Store, screen: str, size: tuple[int, int]) -> None:
    assert snap_compare(StepLineApp(store), terminal_size=size, run_before=then(*SCREENS[screen]))


@pytest.fixture
def no_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every action fails at once, the same way: the catalog it would open is unreadable."""
    (tmp_path / "broken.toml").write_text("[models.x]\nprovider = \n")
    monkeypatch.chdir(tmp_path)  # the message quotes the path: the same one in every run
    monkeypatch.setenv("STEPLINE_CONFIG", "broken.toml")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # configured: none is started


@SIZES
def test_action_failed(snap_compare: Snap, store: Store, no_runtime: None, size: tuple[int, int]) -> None:
    assert snap_compare(StepLineApp(store), terminal_size=size, run_before=then("enter", "R"))


@SIZES
def test_step_replay(snap_compare: Snap, store: Store, no_runtime: None, size: tuple[int, int]) -> None:
    """The step-replay screen with one instance replayed (as its worker reports it), the
    replays having stopped on the unreadable catalog (the modal closed)."""
    from flows.instances import StepReplay
    from tui.screens.replays import ReplayScreen

    async def run(pilot: Pilot[Any]) -> None:
        await then("p", "R", "y", "escape")(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ReplayScreen)
        screen._add(StepReplay("1" * 32, "needs_review", "completed", RAW, RAW.replace('"lots"', "120.5")))
        await pilot.pause()

    assert snap_compare(StepLineApp(store), terminal_size=size, run_before=run)
