"""A small store with fixed ids, times and outputs, for snapshots and for provoking failures:
an instance that needs review (with its failed attempt, schema and open review), a completed
one, one paused on a rate limit, a prompt version, a consistency probe and a notification."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import update
from sqlmodel import Session

from storage.db import open_engine
from storage.models import (
    Attempt,
    ConsistencyRun,
    InstanceStatus,
    Notification,
    OutputSchema,
    PromptVersion,
    ReviewItem,
    StepRun,
    WorkflowInstance,
    schema_digest,
)
from storage.store import Store
from tests.flows.helpers import Invoice

WHEN = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
RAW = '{"vendor": "[bold red]Acme[/]", "total": "lots", "currency": "EUR", "note": "\\u001b[31m"}'

PROBE_AT_0 = {
    "vendor": {"kind": "text", "agreement": 1.0, "distinct": 1, "values": [["Acme", 10]]},
    "total": {"kind": "number", "agreement": 1.0, "distinct": 1, "values": [[120.5, 10]]},
    "currency": {"kind": "choice", "agreement": 1.0, "distinct": 1, "values": [["EUR", 10]]},
}
PROBE_AT_07 = {
    "vendor": {"kind": "text", "agreement": 0.6, "distinct": 3, "values": [["Acme", 6], ["ACME GmbH", 3]]},
    "total": {"kind": "number", "agreement": 1.0, "distinct": 1, "values": [[120.5, 10]]},
    "currency": {"kind": "choice", "agreement": 0.8, "distinct": 2, "values": [["EUR", 8], ["USD", 2]]},
}
"""A probe of extract-invoice at its temperature 0 and at 0.7: the seed's 80/20 on its currency."""


def seeded(folder: Path) -> Iterator[Store]:
    """The store, open; closed when the generator is."""
    store = Store(open_engine(f"sqlite:///{folder / 'snap.db'}"))
    prompt = store.prompt_version(
        "extract-invoice", "Extract the invoice.", "Invoice: $text", "f" * 64, "ana"
    )
    with store.engine.begin() as conn:  # a fixed time, for the screens that show it
        conn.execute(update(PromptVersion).values(created_at=WHEN))
    store.add_consistency_run(
        ConsistencyRun(
            id="c" * 32,
            workflow="file-invoice",
            step="extract-invoice",
            input_digest="d" * 64,
            samples=10,
            threshold=0.9,
            temperature=0.0,
            agreement=PROBE_AT_0,
            verdict="consistent",
            compare_temperature=0.7,
            compare_agreement=PROBE_AT_07,
            compare_failed=0,
            compare_verdict="inconsistent",
            model_id="gpt-test",
            prompt_version_id=prompt,
            created_at=WHEN,
        )
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
        session.add(
            Notification(
                id="8" * 32,
                instance_id="3" * 32,
                event="paused",
                target="mailto://ops@example.com",
                title="customer-intake paused at triage-request",
                body="rate_limited; `stepline replay 333333333333` resumes it",
                delivered=True,
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
