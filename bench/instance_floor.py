"""One-step instances end to end, against a bare Prefect flow with one task, side by side.

What it measures, interleaved in one process on Prefect's local server (warm), against a
loopback OpenAI server:

  (a) a bare Prefect flow with one task that makes the same request (openai SDK + parse);
  (b) a Stepline instance of a one-step workflow: ``run_workflow`` (instance row, lease, fenced
      attempt rows, Instructor, the step as a Prefect task inside the workflow's flow run).

Each is timed with Prefect's flow-run heartbeat on (Prefect's default, 180 s) and off (Stepline's
default, ``[workers] prefect_heartbeat_s``): a sync flow joins the heartbeat thread as it ends.
Printed: p50 / p95 per variant and the ratio (b)/(a) at each setting.

How to run:

    uv run python bench/instance_floor.py              # 40 measured instances per variant
    uv run python bench/instance_floor.py --calls 100
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    MODEL_ID,
    console,
    database_url,
    open_runtime,
    openai_server,
    print_table,
    require_completed,
    start_prefect,
)
from common import loopback_catalog as bench_catalog


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=40, help="measured instances per variant (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed instances per variant first")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.flows.helpers import VALID

    with (
        tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp,
        openai_server(VALID, in_process=False) as base_url,
        database_url(None, Path(tmp)) as url,
    ):
        runtime = open_runtime(Path(tmp), bench_catalog(base_url), url)
        try:
            console.print(f"Prefect API ready in {start_prefect():.1f} s; loopback server in a child process")
            rows = measure(args, runtime, base_url)
        finally:
            runtime.close()
    print_table(
        "one-step instance end to end (ms)", ("variant", "heartbeat", "p50", "p95", "ratio p50"), rows
    )
    return 0


def measure(args: argparse.Namespace, runtime: Any, base_url: str) -> list[list[object]]:
    import openai
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.settings import get_current_settings

    from flows.instances import run_workflow
    from tests.flows.helpers import INPUT, Document, Invoice, invoice_workflow

    workflow = invoice_workflow(MODEL_ID)
    step = workflow.steps[0]
    messages = step.prompt.render(Document.model_validate(INPUT))
    schema = Invoice.model_json_schema()
    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=30)
    request: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "Invoice", "parameters": schema}}],
        "tool_choice": {"type": "function", "function": {"name": "Invoice"}},
        "temperature": 0.0,
    }

    @task(name="bare-call", cache_policy=NO_CACHE, persist_result=False)
    def call() -> Invoice:
        completion = client.chat.completions.create(**request)
        arguments = (completion.choices[0].message.tool_calls or [])[0].function.arguments
        return Invoice.model_validate_json(arguments)

    @flow(name="bare-flow")
    def bare_flow() -> Invoice:
        return call()

    def stepline() -> object:
        result = run_workflow(workflow, INPUT, runtime)
        require_completed(result, "a one-step instance")
        return result

    variants: dict[str, Callable[[], object]] = {
        "(a) bare Prefect flow + task": bare_flow,
        "(b) Stepline": stepline,
    }
    rows: list[list[object]] = []
    settings = get_current_settings().flows
    for label, heartbeat in (("on (180 s)", 180), ("off", None)):
        settings.heartbeat_frequency = heartbeat
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.warmup + args.calls):
            for name, run in variants.items():  # interleaved: the machine's load hits both alike
                started = time.perf_counter()
                run()
                if round_ >= args.warmup:
                    times[name].append((time.perf_counter() - started) * 1000)
        base = statistics.median(times["(a) bare Prefect flow + task"])
        for name, values in times.items():
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            p50 = statistics.median(ordered)
            rows.append([name, label, p50, p95, p50 / base])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
