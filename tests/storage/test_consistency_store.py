"""Consistency probes on SQLite and PostgreSQL: stored once, read newest first, latest per step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.models import ConsistencyRun
from storage.store import Store

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
SPLIT = {"risk_level": {"kind": "choice", "agreement": 0.8, "distinct": 2, "values": [["medium", 8]]}}


def probe(step: str, minutes: int, verdict: str) -> ConsistencyRun:
    return ConsistencyRun(
        workflow="contract-review",
        step=step,
        input_digest="d" * 64,
        samples=10,
        threshold=0.9,
        temperature=0.1,
        agreement={
            "risk_level": {"kind": "choice", "agreement": 0.8, "distinct": 2, "values": [["medium", 8]]}
        },
        verdict=verdict,
        compare_temperature=0.0,
        compare_agreement={},
        compare_failed=0,
        compare_verdict="consistent",
        model_id="gpt-test",
        created_at=T0 + timedelta(minutes=minutes),
    )


def test_probes_read_back_newest_first_and_latest_per_step(store: Store) -> None:
    older = store.add_consistency_run(probe("assess-risk", 0, "consistent"))
    newer = store.add_consistency_run(probe("assess-risk", 5, "inconsistent"))
    other = store.add_consistency_run(probe("extract-clauses", 1, "consistent"))

    assert [run.id for run in store.consistency_runs("assess-risk")] == [newer, older]
    latest = store.latest_consistency()
    assert {step: run.id for step, run in latest.items()} == {"assess-risk": newer, "extract-clauses": other}
    run = latest["assess-risk"]
    assert run.agreement["risk_level"]["values"] == [["medium", 8]]
    assert (run.temperature, run.compare_temperature, run.compare_verdict) == (0.1, 0.0, "consistent")
