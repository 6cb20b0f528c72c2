"""The embedded model (SmolLM2-135M on llama-cpp-python) on the demo workflow, step by step.

What it measures, on the built-in catalog's ``smollm2`` model:

  1. load time of the GGUF (``llama_cpp.Llama`` with the settings steps/providers/embedded.py uses);
  2. plain generation speed: llama.cpp directly, a fixed prompt asking for a few paragraphs,
     ``max_tokens`` 128, temperature 0 (``--gen-runs`` runs; the tokens actually produced count);
  3. contract-review (flows/contract_review.py) over the sample contracts, run as
     ``stepline run contract-review --input samples/contracts/`` runs it (built-in catalog, no
     API keys, ``flows.batch.run_batch``), then per step, from the attempt rows the run
     persisted: calls, p50 latency, output tokens, and tokens/s (sum of tokens_out over sum of
     latency), with the failure classes seen and the instances' outcomes.

Why: the demo must run in reasonable time on a laptop with no keys; this says which step costs
what, and how constrained (JSON-schema grammar) decoding compares with plain generation.

The run uses ``--concurrency`` 1 by default (the CLI uses 4): llama.cpp calls are serialised by
a lock inside the model client, so with more instances at once an attempt's latency would
include waiting for that lock. The database is a temporary SQLite file.

How to run:

    uv run python bench/embedded.py                       # the 3 sample contracts
    uv run python bench/embedded.py --input samples/contracts/mutual-nda.json --gen-runs 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import console, percentile, print_table, start_prefect, summary_ms

if TYPE_CHECKING:
    from flows.batch import BatchItem
    from flows.runtime import Runtime
    from storage.models import Attempt

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nExplain in a few paragraphs what a non-disclosure agreement is, "
    "what it usually contains, and why companies sign them.<|im_end|>\n<|im_start|>assistant\n"
)
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input",
        default=str(REPO / "samples" / "contracts"),
        help="a folder of contract JSON files, a JSONL file or one JSON file (default samples/contracts)",
    )
    parser.add_argument("--gen-runs", type=int, default=3, help="plain-generation runs (default 3)")
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="tokens per plain generation (default 128)"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="instances at once (default 1; see above)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    source = Path(args.input).resolve()
    # The built-in catalog, as a first `stepline run` sees it: no config file, no API keys.
    for name in ("STEPLINE_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp:
        os.chdir(tmp)  # no ./stepline.toml can shadow the built-in catalog here
        os.environ["STEPLINE_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'stepline.db'}"
        plain_generation(args)
        run_contract_review(args, source)
        os.chdir(REPO)
    console.print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def plain_generation(args: argparse.Namespace) -> None:
    from llama_cpp import Llama

    from steps.settings import DEFAULT_CATALOG, default_gguf_path, load_settings

    settings = load_settings()
    config = settings.models["smollm2"]
    path = config.gguf_path or default_gguf_path()
    t0 = time.perf_counter()
    llama = Llama(
        model_path=str(path),
        n_ctx=config.context_window,
        n_threads=max(1, os.cpu_count() or 1),
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    rows: list[list[object]] = [
        ["catalog", str(DEFAULT_CATALOG.relative_to(REPO))],
        ["model file", f"{path.name} ({path.stat().st_size / 1e6:.0f} MB)"],
        ["threads", max(1, os.cpu_count() or 1)],
        ["load time, s", load_s],
    ]
    rates: list[float] = []
    try:
        for run in range(args.gen_runs):
            t0 = time.perf_counter()
            llama.reset()  # type: ignore[no-untyped-call]  # no prompt cache from the previous run
            result: Any = llama.create_completion(PROMPT, max_tokens=args.max_tokens, temperature=0.0)
            seconds = time.perf_counter() - t0
            tokens = int(result["usage"]["completion_tokens"])
            rates.append(tokens / seconds)
            rows.append(
                [
                    f"plain generation run {run + 1}: tokens, s, tokens/s",
                    f"{tokens}, {seconds:.2f}, {tokens / seconds:.1f}",
                ]
            )
        if rates:
            rows.append(["plain generation, median tokens/s", statistics.median(rates)])
    finally:
        llama.close()
    print_table("embedded model: load and plain generation (llama.cpp directly)", ["figure", "value"], rows)


def run_contract_review(args: argparse.Namespace, source: Path) -> None:
    from flows.batch import read_items, run_batch
    from flows.registry import get_workflow
    from flows.runtime import Runtime
    from steps.routing import choose_route

    workflow = get_workflow("contract-review")
    items = read_items(source) if source.is_dir() or source.suffix.lower() == ".jsonl" else [one_item(source)]
    prefect_s = start_prefect()
    runtime = Runtime.open()
    try:
        routes = {
            step.name: choose_route(step, runtime.settings, privacy=workflow.privacy.of(step)).model_id
            for step in workflow.steps
        }
        console.print(
            f"contract-review on {len(items)} input(s) from {source}; "
            f"Prefect API ready in {prefect_s:.1f} s; routes: {routes}"
        )
        t0 = time.perf_counter()
        report = run_batch(workflow, items, runtime, concurrency=args.concurrency)
        wall = time.perf_counter() - t0
        print_step_figures(runtime, wall, len(items), dict(report.counts()))
    finally:
        runtime.close()


def one_item(path: Path) -> BatchItem:
    """One JSON file as one input, as ``stepline run --input FILE.json`` takes it."""
    from flows.batch import BatchItem

    data = path.read_bytes()
    return BatchItem(str(path), payload=json.loads(data), digest=hashlib.sha256(data).hexdigest())


def print_step_figures(runtime: Runtime, wall: float, inputs: int, outcomes: dict[str, int]) -> None:
    from sqlmodel import Session, col, select

    from storage.models import Attempt, WorkflowInstance

    with Session(runtime.store.engine) as session:
        attempts = session.exec(
            select(Attempt).join(WorkflowInstance, col(WorkflowInstance.id) == col(Attempt.instance_id))
        ).all()
        instances = session.exec(select(WorkflowInstance)).all()
    by_step: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_step[attempt.step].append(attempt)
    order = ["extract-clauses", "assess-risk", "summarize-review"]
    rows: list[list[object]] = []
    for step in sorted(by_step, key=lambda s: order.index(s) if s in order else len(order)):
        rows.append(step_row(step, by_step[step]))
    rows.append(step_row("all steps", list(attempts)))
    print_table(
        "contract-review on smollm2, per step (from the persisted attempt rows)",
        ["step", "calls", "ok", "failures", "p50 ms", "p95 ms", "p50 tok out", "tok out", "tok/s"],
        rows,
    )
    console.print(
        "latency is the whole request: prompt processing plus JSON-schema-constrained decoding; "
        "tok/s = tokens out / latency"
    )
    durations = [
        (i.finished_at - i.created_at).total_seconds() for i in instances if i.finished_at is not None
    ]
    p50, p95, mean = summary_ms([d * 1000 for d in durations])
    statuses = Counter(i.status for i in instances)
    print_table(
        "contract-review instances",
        ["figure", "value"],
        [
            ["inputs", inputs],
            ["batch wall time, s", wall],
            ["instance statuses (database)", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))],
            ["batch outcomes", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))],
            [
                "finished instance duration p50 / p95 / mean, s",
                f"{p50 / 1000:.1f} / {p95 / 1000:.1f} / {mean / 1000:.1f}",
            ],
            ["model calls per instance (mean)", len(attempts) / max(1, len(instances))],
        ],
    )


def step_row(name: str, attempts: list[Attempt]) -> list[object]:
    latencies = [a.latency_ms for a in attempts if a.latency_ms is not None]
    tokens = [a.tokens_out for a in attempts if a.tokens_out is not None]
    failures = Counter(a.failure_class for a in attempts if a.failure_class)
    seconds = sum(latencies) / 1000
    return [
        name,
        len(attempts),
        sum(1 for a in attempts if a.failure_class is None),
        ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "-",
        percentile(latencies, 50),
        percentile(latencies, 95),
        percentile([float(t) for t in tokens], 50),
        sum(tokens),
        sum(tokens) / seconds if seconds else float("nan"),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
