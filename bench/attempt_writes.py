"""Attempt rows persisted per second, SQLite against PostgreSQL, one writer against several.

What it measures: attempts written through ``storage.store.Store`` exactly as the engine
writes them, each committed in its own transaction, on a SQLite file (engine from
``storage.db.open_engine``, which applies the WAL pragmas) and on PostgreSQL (a fresh schema in
the ``test`` database, dropped afterwards). Each backend runs a sequential single writer, then
``--writers`` (default 4) concurrent threads sharing one Store. Rows are realistic: a request of
about 2 KB of messages, a raw output of about 1 KB, the raw HTTP body (about 2.5 KB), the
schema reference, sampling, parsed output and token counts.

The write path is the engine's: ``start_attempt(fence, values) -> id`` before the request
(the step's first one writes its step run in the same commit) and ``finish_attempt(fence, id,
**values)`` when it ends, both fenced by the instance's token (``storage.fencing``) and timed
as one attempt.

Printed: attempts/s per backend and mode, writes/s (each attempt is two fenced commits: its
request before it is sent, its answer after), and p50 / p95 ms per attempt (both writes).

Why: every attempt is committed as soon as it ends (a crash loses no finished attempt), so
this write sits on every model call's path and bounds how many calls a process can record.

How to run:

    uv run python bench/attempt_writes.py                         # 2,000 attempts per mode, both backends
    uv run python bench/attempt_writes.py --count 200 --backends sqlite   # quick check
    uv run python bench/attempt_writes.py --writers 8 --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import DEFAULT_PG, console, database_url, describe_url, print_table, summary_ms
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from storage.models import NewStepRun
    from storage.store import Fence, Store

COLUMNS = (
    "backend",
    "write path",
    "mode",
    "writers",
    "attempts",
    "wall s",
    "attempts/s",
    "writes/s",
    "p50 ms",
    "p95 ms",
    "mean ms",
)
Writer = Callable[[dict[str, Any], dict[str, Any]], None]
"""Writes one attempt: (fields known when the request starts, fields known when it ends)."""


class Clause(BaseModel):
    clause_id: str = Field(min_length=1, max_length=12, description="Short id such as c1, c2")
    heading: str = Field(min_length=1, max_length=60, description="A few words naming the clause")
    text: str = Field(min_length=1, max_length=300, description="The clause's wording, shortened")


class ExtractedClauses(BaseModel):
    clauses: list[Clause] = Field(min_length=1, max_length=6)


def fenced_writer(store: Store, fence: Fence, run: NewStepRun) -> Writer:
    """The engine's two fenced writes per attempt; the first also writes ``run``."""
    pending = [run]
    schema = ExtractedClauses.model_json_schema()  # stored once, then referenced by hash

    def two_calls(begin: dict[str, Any], end: dict[str, Any]) -> None:
        attempt_id = store.start_attempt(
            fence, begin, step_run=pending.pop() if pending else None, schema=schema
        )
        store.finish_attempt(fence, attempt_id, **end)

    return two_calls


def attempt_payload() -> tuple[dict[str, Any], dict[str, Any]]:
    """(start fields, end fields) of a realistic successful extraction attempt, minus the ids."""
    contract = " ".join(
        f"{n}. Clause {n}. The supplier shall deliver the services described in schedule {n} with "
        f"reasonable skill and care, and the customer shall pay the fees within 30 days of invoice."
        for n in range(1, 13)
    )
    messages = [
        {
            "role": "system",
            "content": "You extract the numbered clauses of a contract as JSON. For each clause give "
            'clause_id ("c" and its number: c1, c2, ...), heading and text.',
        },
        {"role": "user", "content": f"Contract: Master Services Agreement\n\n{contract}"},
    ]
    parsed = {
        "clauses": [
            {
                "clause_id": f"c{n}",
                "heading": f"Clause {n}: delivery and payment",
                "text": f"The supplier delivers the services of schedule {n}; the customer pays within 30 "
                "days of invoice, and late payment accrues interest at the statutory rate.",
            }
            for n in range(1, 7)
        ]
    }
    raw_output = json.dumps(parsed, ensure_ascii=False)
    raw_response = json.dumps(
        {
            "id": "chatcmpl-Bx7kq2ZqLr3mP0aVb9Nc4Yt1HsWeD",
            "object": "chat.completion",
            "created": 1764000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "annotations": [],
                        "tool_calls": [
                            {
                                "id": "call_Qm3xT8bVn2Lk9Pz4Rw7Yc1Ja",
                                "type": "function",
                                "function": {"name": "ExtractedClauses", "arguments": raw_output},
                            }
                        ],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 612,
                "completion_tokens": 298,
                "total_tokens": 910,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_0ba0d124f1",
        }
    )
    begin = {
        "step": "extract-clauses",
        "provider": "openai",
        "model_id": "gpt-4o-mini",
        "provider_model": "gpt-4o-mini",
        "routing_reason": "cheapest model of at least tier cheap (pinned: no); 3 candidates",
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 1024},
        "request_messages": messages,
        "wait_s": None,
    }
    end = {
        "raw_output": raw_output,
        "raw_response": raw_response,
        "parsed_output": parsed,
        "tokens_in": 612,
        "tokens_out": 298,
        "cost_usd": 612 * 0.15e-6 + 298 * 0.6e-6,
        "latency_ms": 850.0,
    }
    return begin, end


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000, help="attempts written per mode (default 2000)")
    parser.add_argument("--warmup", type=int, default=50, help="attempts written first, untimed (default 50)")
    parser.add_argument("--writers", type=int, default=4, help="threads in the concurrent mode (default 4)")
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres (default both)"
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG, help=f"PostgreSQL server (default {DEFAULT_PG})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    rows: list[list[object]] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend not in ("sqlite", "postgres"):
            raise SystemExit(f"unknown backend {backend!r}; use sqlite and/or postgres")
        with (
            tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp,
            database_url(None if backend == "sqlite" else args.pg_url, Path(tmp)) as url,
        ):
            console.print(f"{backend}: {describe_url(url)}")
            for mode, writers, count, wall, latencies in bench_backend(url, args):
                p50, p95, mean = summary_ms(latencies)
                rows.append(
                    [
                        backend,
                        "start+finish_attempt",
                        mode,
                        writers,
                        count,
                        wall,
                        count / wall,
                        2 * count / wall,
                        p50,
                        p95,
                        mean,
                    ]
                )
    print_table(
        f"attempt writes, each committed on its own (~{row_kib():.1f} KiB of text per row)",
        COLUMNS,
        rows,
    )
    console.print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def row_kib() -> float:
    begin, end = attempt_payload()
    return len(json.dumps({**begin, **end}, default=str)) / 1024


def bench_backend(url: str, args: argparse.Namespace) -> list[tuple[str, int, int, float, list[float]]]:
    from storage.db import open_engine
    from storage.models import NewStepRun
    from storage.store import Fence, Store

    store = Store(open_engine(url))
    try:
        begin, end = attempt_payload()
        version = store.prompt_version(
            "extract-clauses", "system", "Contract: $title\n\n$text", "b" * 64, "bench"
        )
        instance = store.create_instance("bench-storage", {"title": "MSA"}, "bench", worker="bench")
        fence = Fence(instance.id, instance.fence)
        runs = iter(range(1_000_000))

        def new_writer() -> Callable[[], float]:
            """A step run of its own, and a function writing its next attempt (ms taken)."""
            run = NewStepRun(
                instance_id=instance.id, step="extract-clauses", index=next(runs), input={"title": "MSA"}
            )
            write = fenced_writer(store, fence, run)
            numbers = iter(range(1, 1_000_000))
            ids = {"instance_id": instance.id, "step_run_id": run.id, "prompt_version_id": version}

            def one() -> float:
                now = datetime.now(UTC)
                start = {**begin, **ids, "attempt_number": next(numbers), "started_at": now}
                t0 = time.perf_counter()
                write(start, {**end, "finished_at": now})
                return (time.perf_counter() - t0) * 1000

            return one

        warm = new_writer()
        for _ in range(args.warmup):
            warm()

        results: list[tuple[str, int, int, float, list[float]]] = []
        single = new_writer()
        t0 = time.perf_counter()
        latencies = [single() for _ in range(args.count)]
        results.append(("sequential", 1, args.count, time.perf_counter() - t0, latencies))

        writers = max(1, args.writers)
        share = [args.count // writers + (1 if n < args.count % writers else 0) for n in range(writers)]
        functions = [new_writer() for _ in range(writers)]
        collected: list[list[float]] = [[] for _ in range(writers)]
        barrier = threading.Barrier(writers + 1)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            barrier.wait()
            try:
                for _ in range(share[n]):
                    collected[n].append(functions[n]())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,), name=f"writer-{n}") for n in range(writers)]
        for thread in threads:
            thread.start()
        barrier.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        merged = [value for values in collected for value in values]
        results.append(("concurrent", writers, len(merged), wall, merged))
        expected = args.warmup + args.count + len(merged)
        stored = store.count_attempts(instance.id)
        if stored != expected:
            raise SystemExit(f"expected {expected} attempt rows, found {stored}")
        return results
    finally:
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
