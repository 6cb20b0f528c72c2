"""What the main screens look like at 80x24, compared with the SVGs in ``__snapshots__``.

The database is seeded with fixed ids, times and outputs so that a screen
only changes when the UI does. After an intended change:
``uv run pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from textual.pilot import Pilot

from storage.db import open_engine
from storage.models import (
    Attempt,
    InstanceStatus,
    OutputSchema,
    ReviewItem,
    StepRun,
    WorkflowInstance,
    schema_digest,
)
from storage.store import Store
from tests.flows.helpers import Invoice
from tui.app import StepLineApp

Snap = Callable[..., bool]
WHEN = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
RAW = '{"vendor": "[bold red]Acme[/]", "total": "lots", "currency": "EUR", "note": "\\u001b[31m"}'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(open_engine(f"sqlite:///{tmp_path / 'snap.db'}"))
    prompt = store.prompt_version(
        "extract-invoice", "Extract the invoice.", "Invoice: $text", "f" * 64, "ana"
    )
    with Session(store.engine) as session:
        for n, (workflow, status, step, failure) in enumerate(
            [
                ("file-invoice", InstanceStatus.NEEDS_REVIEW, "extract-invoice", "schema_invalid"),
                ("contract-review", InstanceStatus.COMPLETED, None, None),
                ("customer-intake", InstanceStatus.PAUSED, "triage-request", "rate_limited"),
            ]
        ):
            session.add(
                WorkflowInstance(
                    id=f"{n + 1:x}" * 32,
                    workflow=workflow,
                    input={"text": "ACME GmbH invoice no. 7 - total due EUR 120.50"},
                    status=status.value,
                    owner="ana",
                    failed_step=step,
                    failure_class=failure,
                    error="total: Input should be a valid number" if failure else None,
                    source=f"inbox/{workflow}.json",
                    created_at=WHEN.replace(minute=30 - n),
                    updated_at=WHEN,
                )
            )
        session.commit()  # no ORM relationships: insert parents before children
        session.add(
            StepRun(
                id="5" * 32,
                instance_id="1" * 32,
                step="extract-invoice",
                index=0,
                input={"text": "ACME"},
                status="failed",
                attempts=1,
                model_id="gpt-test",
                failure_class="schema_invalid",
                started_at=WHEN,
            )
        )
        session.commit()
        session.add(
            OutputSchema(
                hash=schema_digest(Invoice.model_json_schema()),
                step="extract-invoice",
                schema_=Invoice.model_json_schema(),
                created_at=WHEN,
            )
        )
        session.commit()
        session.add(_attempt(prompt))
        session.add(
            ReviewItem(
                id="7" * 32,
                instance_id="1" * 32,
                step_run_id="5" * 32,
                step="extract-invoice",
                index=0,
                failure_class="schema_invalid",
                raw_output=RAW,
                expected_schema=Invoice.model_json_schema(),
                validation_errors=[
                    {"path": "$.total", "message": "Input should be a valid number", "input": "lots"}
                ],
                created_at=WHEN,
            )
        )
        session.commit()
    yield store
    store.close()


def _attempt(prompt: str) -> Attempt:
    return Attempt(
        id="6" * 32,
        instance_id="1" * 32,
        step_run_id="5" * 32,
        step="extract-invoice",
        attempt_number=1,
        provider="openai",
        model_id="gpt-test",
        provider_model="gpt-4o-mini",
        routing_reason="pinned by the step",
        prompt_version_id=prompt,
        sampling={"temperature": 0.0, "top_p": 1.0, "max_tokens": 1024},
        request_messages=[{"role": "user", "content": "Invoice: ACME GmbH invoice no. 7"}],
        raw_output=RAW,
        schema_hash=schema_digest(Invoice.model_json_schema()),
        failure_class="schema_invalid",
        error_message="1 validation error for Invoice",
        validation_errors=[
            {"path": "$.total", "message": "Input should be a valid number", "input": "lots"},
            {"path": "$.note", "message": "Extra inputs are not permitted", "input": "\x1b[31m"},
        ],
        tokens_in=120,
        tokens_out=30,
        cost_usd=0.000036,
        latency_ms=812.0,
        started_at=WHEN,
        finished_at=WHEN,
    )


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


def test_instances_screen(snap_compare: Snap, store: Store) -> None:
    assert snap_compare(StepLineApp(store), terminal_size=(80, 24), run_before=then())


def test_instance_screen(snap_compare: Snap, store: Store) -> None:
    assert snap_compare(StepLineApp(store), terminal_size=(80, 24), run_before=then("enter"))


def test_failed_attempt_beside_its_schema(snap_compare: Snap, store: Store) -> None:
    assert snap_compare(StepLineApp(store), terminal_size=(80, 24), run_before=then("enter", "f", "enter"))


def test_failed_attempt_fields(snap_compare: Snap, store: Store) -> None:
    run = then("enter", "f", "enter", "2")
    assert snap_compare(StepLineApp(store), terminal_size=(80, 24), run_before=run)


def test_review_screen(snap_compare: Snap, store: Store) -> None:
    assert snap_compare(StepLineApp(store), terminal_size=(80, 24), run_before=then("v", "enter"))
