"""No key can end the app: each action is made to fail for real, and the failure is shown in the
action-failed modal, the screen under it stays usable, and the database is as it was.

The faults are real ones at the edges: a catalog file that no longer parses (every action
opens the runtime from it), an editor that does not exist, a database file overwritten
under the open app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import TextArea

from storage.store import Store
from tests.flows.helpers import VALID
from tests.tui.seed import seeded
from tui.app import StepLineApp
from tui.screens.attempt import AttemptScreen
from tui.screens.error import ActionFailed
from tui.screens.instance import InstanceScreen
from tui.screens.prompts import PromptScreen
from tui.screens.replays import ReplayScreen
from tui.screens.reviews import ReviewScreen

Steps = Callable[[Pilot[Any]], Awaitable[None]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from seeded(tmp_path)


@pytest.fixture
def broken_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    broken = tmp_path / "broken.toml"
    broken.write_text("[models.x]\nprovider = \n")
    monkeypatch.setenv("STEPLINE_CONFIG", str(broken))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # configured: none is started
    monkeypatch.setenv("VISUAL", str(tmp_path / "no-such-editor"))
    return broken


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def keys(*pressed: str) -> Steps:
    async def run(pilot: Pilot[Any]) -> None:
        for key in pressed:
            await pilot.press(key)
            await settle(pilot)

    return run


async def _approve(pilot: Pilot[Any]) -> None:
    await keys("v", "enter")(pilot)
    pilot.app.screen.query_one("#editor", TextArea).text = json.dumps(VALID)  # a correction that passes
    await keys("ctrl+s")(pilot)


async def _save_prompt(pilot: Pilot[Any]) -> None:
    await keys("p", "enter")(pilot)
    pilot.app.screen.query_one("#system", TextArea).text = "Extract the invoice. Totals are numbers."
    await keys("ctrl+s")(pilot)


ACTIONS: dict[str, tuple[Steps, type[Screen[Any]], str]] = {
    # action: (the keys that start it, the screen left under the modal, what the modal says)
    "approve": (_approve, ReviewScreen, "broken.toml"),
    "reject": (keys("v", "enter", "ctrl+r"), ReviewScreen, "broken.toml"),
    "replay": (keys("enter", "R"), InstanceScreen, "broken.toml"),
    "replay a step": (keys("p", "R", "y"), ReplayScreen, "broken.toml"),
    "save a prompt": (_save_prompt, PromptScreen, "broken.toml"),
    "raw output in the editor": (keys("enter", "f", "e"), AttemptScreen, "no-such-editor"),
    "correction in the editor": (keys("v", "enter", "ctrl+o"), ReviewScreen, "no-such-editor"),
    "prompt in the editor": (keys("p", "enter", "ctrl+o"), PromptScreen, "no-such-editor"),
}


def _state(store: Store) -> object:
    instances = sorted((i.id, i.status, i.generation) for i in store.list_instances(limit=100))
    reviews = sorted((r.id, r.status) for r in store.list_reviews(limit=100))
    prompts = sorted(p.id for p in store.prompt_versions())
    return instances, reviews, prompts


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_failing_action_shows_the_modal_and_changes_nothing(
    action: str, store: Store, broken_catalog: Path
) -> None:
    start, under, said = ACTIONS[action]
    before = _state(store)

    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await start(pilot)
            assert isinstance(app.screen, ActionFailed), f"{action}: no modal, {app.screen!r}"
            assert said in app.screen.message + app.screen.action_text
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, under)
            left = app.screen
            await pilot.press("escape")  # still answering keys: back to the screen before
            await settle(pilot)
            assert app.screen is not left
            assert app.is_running

    asyncio.run(scenario())
    assert _state(store) == before


def test_a_database_overwritten_under_the_app_is_said_and_the_app_stays(store: Store, tmp_path: Path) -> None:
    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)  # the first page is on screen: enter has a row to open
            await keys("enter")(pilot)
            assert isinstance(app.screen, InstanceScreen)
            store.engine.dispose()  # the pool's connections go; the next read opens the file again
            (tmp_path / "snap.db").write_bytes(b"this is not a database\n" * 64)
            said = []
            for key in ("f", "r", "escape", "v", "p", "n"):
                await pilot.press(key)
                await settle(pilot)
                if isinstance(app.screen, ActionFailed):
                    said.append(app.screen.message)
                    await pilot.press("escape")
                    await settle(pilot)
            assert said, "no read failed: the database was not overwritten"
            assert app.is_running

    asyncio.run(scenario())
