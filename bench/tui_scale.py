"""The TUI with a large store: seed N failed instances (one failed attempt each), then time
the first paint of the instances screen and paging through it.

    uv run python bench/tui_scale.py                 # 100,000 failed attempts on SQLite
    uv run python bench/tui_scale.py --count 20000 --database postgresql+psycopg://127.0.0.1:5432/test

Prints figures; it asserts nothing. The database is a fresh file in a temporary folder
(or, for a PostgreSQL URL, a fresh schema that is dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from storage.db import open_engine
from storage.models import Attempt, OutputSchema, StepRun, WorkflowInstance, schema_digest
from storage.store import Store

RAW = '{"vendor": "Acme", "total": "lots", "currency": "EUR"}'
SCHEMA = {"title": "Invoice", "type": "object", "properties": {"total": {"type": "number"}}}
SCHEMA_HASH = schema_digest(SCHEMA)


def seed(store: Store, count: int) -> float:
    prompt = store.prompt_version("extract-invoice", "Extract.", "Invoice: $text", "0" * 64, "bench")
    start = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with store.engine.begin() as conn:
        conn.execute(  # stored once, referenced by every attempt
            insert(OutputSchema),
            [{"hash": SCHEMA_HASH, "step": "extract-invoice", "schema": SCHEMA, "created_at": base}],
        )
        for offset in range(0, count, 5000):
            instances: list[dict[str, Any]] = []
            runs: list[dict[str, Any]] = []
            attempts: list[dict[str, Any]] = []
            for n in range(offset, min(offset + 5000, count)):
                when = base + timedelta(seconds=n)
                instance, run = uuid.uuid4().hex, uuid.uuid4().hex
                instances.append(
                    {
                        "id": instance,
                        "workflow": "file-invoice",
                        "input": {"text": f"invoice {n}"},
                        "source": f"inbox/invoice-{n:06d}.json",
                        "status": "needs_review",
                        "owner": "bench",
                        "failed_step": "extract-invoice",
                        "failure_class": "schema_invalid",
                        "error": "total: Input should be a valid number",
                        "generation": 0,
                        "created_at": when,
                        "updated_at": when,
                    }
                )
                runs.append(
                    {
                        "id": run,
                        "instance_id": instance,
                        "step": "extract-invoice",
                        "index": 0,
                        "input": {"text": f"invoice {n}"},
                        "status": "failed",
                        "attempts": 1,
                        "generation": 0,
                        "started_at": when,
                    }
                )
                attempts.append(
                    {
                        "id": uuid.uuid4().hex,
                        "instance_id": instance,
                        "step_run_id": run,
                        "step": "extract-invoice",
                        "attempt_number": 1,
                        "provider": "openai",
                        "model_id": "gpt-test",
                        "provider_model": "gpt-4o-mini",
                        "prompt_version_id": prompt,
                        "raw_output": RAW,
                        "schema_hash": SCHEMA_HASH,
                        "failure_class": "schema_invalid",
                        "validation_errors": [
                            {"path": "$.total", "message": "Input should be a valid number"}
                        ],
                        "started_at": when,
                    }
                )
            conn.execute(insert(WorkflowInstance), instances)
            conn.execute(insert(StepRun), runs)
            conn.execute(insert(Attempt), attempts)
    return time.perf_counter() - start


async def measure(store: Store, pages: int) -> tuple[float, list[float], int]:
    from textual.widgets import DataTable

    from tui.app import StepLineApp

    app = StepLineApp(store)
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#instances", DataTable)
        while table.row_count == 0:
            await asyncio.sleep(0.005)
        await pilot.pause()
        first_paint = time.perf_counter() - start
        page_times = []
        for _ in range(pages):
            began = time.perf_counter()
            await pilot.press("pagedown")
            await app.workers.wait_for_complete()
            await pilot.pause()
            page_times.append(time.perf_counter() - began)
        return first_paint, page_times, table.row_count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a new SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database or f"sqlite:///{Path(folder) / 'bench.db'}"
        store = Store(open_engine(url))
        seconds = seed(store, args.count)
        print(f"seeded {args.count:,} failed instances and attempts in {seconds:.1f} s ({url.split(':')[0]})")
        first, pages, rows = asyncio.run(measure(store, args.pages))
        print(f"first screen painted with rows in {first * 1000:.0f} ms (target: under 1,000 ms)")
        print(
            f"page down x{len(pages)}: p50 {statistics.median(pages) * 1000:.0f} ms, "
            f"max {max(pages) * 1000:.0f} ms; {rows:,} rows loaded lazily of {args.count:,}"
        )


if __name__ == "__main__":
    main()
