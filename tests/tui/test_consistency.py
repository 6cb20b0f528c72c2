"""The prompts screen shows each step's latest consistency probe, or how to run one (Pilot, 80x24)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from storage.db import open_engine
from storage.models import ConsistencyRun
from storage.store import Store
from tests.tui.seed import seeded
from tui.app import StepLineApp
from tui.screens.prompts import PromptsScreen


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from seeded(tmp_path)


async def open_prompts(pilot: Pilot[Any]) -> None:
    """The prompts screen (``p``), once the first page has loaded."""
    await pilot.app.workers.wait_for_complete()
    await pilot.press("p")
    await pilot.pause()


def cells(table: DataTable[object]) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]


def test_the_steps_latest_probe_is_shown_field_by_field_at_each_temperature(store: Store) -> None:
    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_prompts(pilot)
            screen = app.screen
            assert isinstance(screen, PromptsScreen)
            verdict = screen.query_one("#steps", DataTable).get_row("extract-invoice")[4]
            assert isinstance(verdict, Text)
            assert verdict.plain == "1.00 ok"  # at the step's own temperature 0
            probes = screen.query_one("#consistency", DataTable)
            assert cells(probes) == [
                ["11-26 09:30", "0", "vendor", "1 distinct", "not judged"],
                ["11-26 09:30", "0", "total", "1.00 (10/10)", "consistent"],
                ["11-26 09:30", "0", "currency", "1.00 (10/10)", "consistent"],
                ["11-26 09:30", "0.7", "vendor", "3 distinct", "not judged"],
                ["11-26 09:30", "0.7", "total", "1.00 (10/10)", "inconsistent"],
                ["11-26 09:30", "0.7", "currency", "0.80 (8/10)", "inconsistent"],
            ]
            assert screen.query_one("#consistency-pane").border_title == "consistency: extract-invoice"
            assert not screen.query_one("#consistency-empty", Static).display

    asyncio.run(scenario())


def test_a_newer_probe_shows_first_and_sets_the_verdict(store: Store) -> None:
    store.add_consistency_run(
        ConsistencyRun(
            workflow="file-invoice",
            step="extract-invoice",
            input_digest="e" * 64,
            samples=5,
            threshold=0.9,
            temperature=0.7,
            agreement={"currency": {"kind": "choice", "agreement": 0.6, "distinct": 2, "values": []}},
            verdict="inconsistent",
            model_id="gpt-test",
        )
    )

    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_prompts(pilot)
            steps = app.screen.query_one("#steps", DataTable)
            verdict = steps.get_row("extract-invoice")[4]
            assert isinstance(verdict, Text)
            assert verdict.plain == "0.60 low"
            first = cells(app.screen.query_one("#consistency", DataTable))[0]
            assert first[1:] == ["0.7", "currency", "0.60 (3/5)", "inconsistent"]

    asyncio.run(scenario())


def test_a_step_never_probed_says_how_to_probe_it(tmp_path: Path) -> None:
    store = Store(open_engine(f"sqlite:///{tmp_path / 'fresh.db'}"))
    store.prompt_version("assess-risk", "Rate it.", "$text", "a" * 64, "code")

    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_prompts(pilot)
            verdict = app.screen.query_one("#steps", DataTable).get_row("assess-risk")[4]
            assert isinstance(verdict, Text)
            assert verdict.plain == "not probed"
            empty = app.screen.query_one("#consistency-empty", Static)
            assert empty.display
            assert "`stepline consistency <workflow> assess-risk --input F --samples 10`" in str(
                empty.content
            )
            assert not app.screen.query_one("#consistency", DataTable).display

    try:
        asyncio.run(scenario())
    finally:
        store.close()
