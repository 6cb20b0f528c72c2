"""Batch throughput under a provider's requests-per-minute limit.

What it measures: ``--instances`` (default 3,000) instances of a one-step workflow (the Invoice
step of tests/flows/helpers.py), run with ``flows.batch.run_batch`` at ``--concurrency``
(default 16), against a loopback OpenAI server in a process of its own that enforces ``--rpm``
(default 1,500) as providers do: a token bucket holding one second's worth of requests
(``tests.servers.base.RateLimit``); above it, 429 with ``retry-after``. The catalog model carries
the same ``rpm`` (the client-side gate of steps/limits.py, which spaces requests evenly), so a
well-behaved client should see (almost) no 429.

Printed: instances, wall time, completed per minute against the bound the limit allows
(limit / requests per instance), % of that bound, requests the server received and the share
it answered 429, instance statuses counted from the database, and lost = instances submitted
minus instances in a final state. Targets (issue 17): >= 95 % of the bound, <= 1 % of requests
answered 429, zero lost.

By default a batch runs inside one Prefect flow run, each step a task run of it
(``[workers] batch_flow_runs = "one"``); ``--flow-runs per_instance`` gives each instance a flow
run of its own. To tell a slow client from the limit, it first runs calibrations at the same
concurrency against a second loopback server with no limit (``--calibrate`` each, default 300):
bare Prefect flow runs (one empty task each, no Stepline), and Stepline's batch both ways. It
also counts the Prefect API's responses by status. ``--prefect-db postgres`` runs a Prefect API
server of its own on a fresh PostgreSQL database instead of the shared local server.

How to run:

    uv run python bench/throughput.py                            # 3,000 instances at 1,500 rpm
    uv run python bench/throughput.py --instances 500 --rpm 600 --calibrate 60   # quick check
    uv run python bench/throughput.py --flow-runs per_instance --rpm 240 --instances 500
    uv run python bench/throughput.py --client-rpm 0             # no client gate: the server throttles
    uv run python bench/throughput.py --prefect-db postgres       # Prefect's API server on PostgreSQL
    uv run python bench/throughput.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import (
    DEFAULT_PG,
    MODEL_ID,
    Served,
    console,
    database_url,
    describe_url,
    open_runtime,
    print_table,
    served,
    start_prefect,
    summary_ms,
)
from common import loopback_catalog as bench_catalog

if TYPE_CHECKING:
    from flows.batch import BatchReport
    from flows.runtime import Runtime
    from flows.workflow import Workflow

FINAL = ("completed", "needs_review", "paused", "failed")
TARGET_PCT = 95.0
TARGET_429_PCT = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=3000, help="instances to run (default 3000)")
    parser.add_argument("--rpm", type=int, default=1500, help="the server's requests a minute (default 1500)")
    parser.add_argument(
        "--client-rpm",
        type=int,
        default=None,
        help="the catalog model's rpm (client-side gate); default = --rpm, 0 = no client gate",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="instances at once (default 16)")
    parser.add_argument(
        "--flow-runs",
        choices=("one", "per_instance"),
        default="one",
        help="the measured batch in one Prefect flow run, or a flow run per instance (default one)",
    )
    parser.add_argument(
        "--calibrate",
        type=int,
        default=300,
        help="bare Prefect flows, then Stepline batches both ways on an unlimited model, run first "
        "to measure raw capacity (default 300 each; 0 skips)",
    )
    parser.add_argument(
        "--prefect-db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="database of Prefect's temporary API server: its default SQLite file, or a fresh "
        "PostgreSQL database on --pg-server (default sqlite)",
    )
    parser.add_argument(
        "--pg-server", default=DEFAULT_PG, help=f"for --prefect-db postgres (default {DEFAULT_PG})"
    )
    parser.add_argument(
        "--rate-limited-retries",
        type=int,
        default=10,
        help="[retry.retries] rate_limited in the catalog (default 10)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL; default a temporary SQLite file. A PostgreSQL URL gets a fresh schema.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client_rpm = args.rpm if args.client_rpm is None else args.client_rpm
    started = time.perf_counter()
    from tests.flows.helpers import VALID

    with (
        tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp,
        prefect_database(args.prefect_db, args.pg_server),
        database_url(args.database_url, Path(tmp)) as url,
    ):
        with served(VALID, rpm=args.rpm) as limited, served(VALID) as free:
            catalog = bench_catalog(
                limited.url,
                rpm=client_rpm or None,
                rate_limited_retries=args.rate_limited_retries,
                unlimited_url=free.url,
            )
            runtime = open_runtime(Path(tmp), catalog, url)
            try:
                prefect_s = start_prefect()
                console.print(
                    f"database {describe_url(url)}; Prefect API on {args.prefect_db}, "
                    f"ready in {prefect_s:.1f} s; server limit {args.rpm} rpm (token bucket, 1 s deep); "
                    f"client gate {client_rpm or 'off'} rpm; concurrency {args.concurrency}; "
                    f"measured batch: flow runs {args.flow_runs}"
                )
                with PrefectApiStatuses() as api:
                    measured = run_benchmark(args, runtime, api)
                    report_benchmark(args, client_rpm, runtime, measured)
            finally:
                runtime.close()
        report_server(args, measured, limited)
    console.print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


@contextmanager
def prefect_database(kind: str, pg_server: str) -> Iterator[None]:
    """On ``postgres``, run a Prefect API server of its own on a fresh PostgreSQL database.

    The bench then measures Prefect on PostgreSQL rather than the shared local server
    (SQLite); the server and its database are removed afterwards.
    """
    if kind == "sqlite":
        yield
        return
    import socket
    import subprocess
    import sys
    import urllib.request

    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(pg_server)
    name = f"stepline_bench_prefect_{uuid.uuid4().hex[:12]}"
    admin = parsed.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a hex name we made: nothing to inject
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_API_DATABASE_CONNECTION_URL": parsed.set(
            drivername="postgresql+asyncpg", database=name, query={}
        ).render_as_string(hide_password=False),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):  # noqa: S310 (loopback)
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the bench's Prefect server on PostgreSQL did not start") from None
                time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url  # before prefect is imported by the runtime
        yield
    finally:
        server.terminate()
        server.wait(timeout=60)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PrefectApiStatuses:
    """Counts the Prefect API's HTTP responses by status, in this process (httpx is patched)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._original: Any = None

    def __enter__(self) -> PrefectApiStatuses:
        import httpx

        original = httpx.Client.send
        self._original = original
        counts, lock = self.counts, self._lock

        def send(client: httpx.Client, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
            try:
                response = original(client, request, *args, **kwargs)
            except httpx.HTTPError as exc:
                if request.url.path.startswith("/api"):
                    with lock:
                        counts[type(exc).__name__] += 1
                raise
            if request.url.path.startswith("/api"):
                with lock:
                    counts[str(response.status_code)] += 1
            return response

        setattr(httpx.Client, "send", send)  # noqa: B010  (patched for this process only)
        return self

    def __exit__(self, *_: object) -> None:
        import httpx

        setattr(httpx.Client, "send", self._original)  # noqa: B010

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


def describe_statuses(before: Counter[str], after: Counter[str]) -> str:
    delta = after - before
    return ", ".join(f"{status}: {count}" for status, count in sorted(delta.items())) or "-"


@dataclasses.dataclass
class Measured:
    wall: float
    report: BatchReport
    api: str
    calibration: list[list[object]]
    completed: int = 0
    lost: int = 0


def run_benchmark(args: argparse.Namespace, runtime: Runtime, api: PrefectApiStatuses) -> Measured:
    from tests.flows.helpers import invoice_workflow

    calibration: list[list[object]] = []
    if args.calibrate > 0:
        before = api.snapshot()
        wall, durations = run_bare_flows(args.calibrate, args.concurrency)
        p50, p95, _ = summary_ms([d * 1000 for d in durations])
        calibration.append(
            ["bare Prefect flow run + empty task, per instance (no Stepline)", args.calibrate / wall * 60,
             p50, p95, describe_statuses(before, api.snapshot())]
        )  # fmt: skip
        for one in (True, False):
            name = f"bench-calibration-{'one' if one else 'each'}"
            unlimited = dataclasses.replace(invoice_workflow(f"{MODEL_ID}-unlimited"), name=name)
            before = api.snapshot()
            wall, report = run_instances(
                unlimited, args.calibrate, args.concurrency, runtime, name, one_flow_run=one
            )
            completed = report.counts().get("completed", 0)
            p50, p95, _ = summary_ms([d * 1000 for d in instance_durations(runtime, name)])
            label = "one flow run for the batch" if one else "a flow run per instance"
            calibration.append(
                [f"Stepline one-step instances, {label}", completed / wall * 60, p50, p95,
                 describe_statuses(before, api.snapshot())]
            )  # fmt: skip
    limited = dataclasses.replace(invoice_workflow(MODEL_ID), name="bench-throughput")
    api_before = api.snapshot()
    wall, report = run_instances(
        limited, args.instances, args.concurrency, runtime, "measured", one_flow_run=args.flow_runs == "one"
    )
    return Measured(wall, report, describe_statuses(api_before, api.snapshot()), calibration)


def report_benchmark(args: argparse.Namespace, client_rpm: int, runtime: Runtime, measured: Measured) -> None:
    """What the database says of the measured batch (the server's own figures come after it stops)."""
    statuses = db_statuses(runtime, "bench-throughput")
    in_final = sum(statuses.get(s, 0) for s in FINAL)
    completed = statuses.get("completed", 0)
    bound = args.rpm  # one step, one request per instance when nothing fails
    per_min = completed / measured.wall * 60
    rows: list[list[object]] = [
        ["instances submitted", args.instances],
        ["wall time, s (first submit to last outcome)", measured.wall],
        ["completed per minute", per_min],
        [f"bound: {args.rpm} rpm / 1 request per instance", bound],
        ["% of bound", per_min / bound * 100],
        ["attempt rows in the database", attempt_figures(runtime, "bench-throughput")[2]],
        ["Prefect API responses by status (this process)", measured.api],
        *[[f"instances {status} (database)", statuses.get(status, 0)] for status in sorted(statuses)],
        ["lost (submitted - in a final state)", args.instances - in_final],
        [
            "batch outcomes (run_batch report)",
            ", ".join(f"{k} {v}" for k, v in sorted(measured.report.counts().items())),
        ],
    ]
    print_table(
        f"throughput: {args.instances} one-step instances, concurrency {args.concurrency}, "
        f"flow runs {args.flow_runs}, server {args.rpm} rpm, client gate {client_rpm or 'off'}",
        ["figure", "value"],
        rows,
    )
    stopped = stopped_instances(runtime, "bench-throughput")
    if stopped:
        print_table(
            "instances not completed, by status, step and failure class (database)",
            ["status", "step", "failure class", "instances", "first error"],
            stopped,
        )
    durations = instance_durations(runtime, "bench-throughput")
    waits, latencies, _ = attempt_figures(runtime, "bench-throughput")
    d50, d95, dmean = summary_ms([d * 1000 for d in durations])
    w50, w95, wmean = summary_ms([w * 1000 for w in waits])
    l50, l95, lmean = summary_ms(latencies)
    timing_rows: list[list[object]] = [
        ["instance duration (created -> finished, database)", d50, d95, dmean],
        ["attempt wait before sending (gate / backoff, attempt.wait_s)", w50, w95, wmean],
        ["attempt latency (attempt.latency_ms)", l50, l95, lmean],
    ]
    print_table("where an instance's time goes (ms)", ["figure", "p50", "p95", "mean"], timing_rows)
    if measured.calibration:
        print_table(
            f"calibration: {args.calibrate} each at concurrency {args.concurrency}, no rate limit "
            f"(bound above: {bound:,.0f}/min)",
            ["run", "completed/min", "p50 ms", "p95 ms", "Prefect API responses"],
            measured.calibration,
        )
    measured.completed = completed
    measured.lost = args.instances - in_final


def report_server(args: argparse.Namespace, measured: Measured, server: Served) -> None:
    """The limited server's view, read once it stopped: requests, 429s, its arrival rate."""
    pct = measured.completed / measured.wall * 60 / args.rpm * 100
    share_429 = server.rate_limited / server.requests * 100 if server.requests else 0.0
    stamps = sorted(server.arrivals)
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
    server_rpm = (len(stamps) - 1) / span * 60 if len(stamps) > 1 else float("nan")
    print_table(
        "the limited server's view",
        ["figure", "value"],
        [
            ["requests received", server.requests],
            ["answered 429", server.rate_limited],
            ["% answered 429", share_429],
            ["answered requests per minute, first to last", server_rpm],
        ],
    )
    met = pct >= TARGET_PCT and share_429 <= TARGET_429_PCT and measured.lost == 0
    console.print(
        f"target: >= {TARGET_PCT:.0f} % of bound, <= {TARGET_429_PCT:.0f} % answered 429, zero lost: "
        f"{pct:.1f} %, {share_429:.2f} % 429, lost {measured.lost} -> [bold]{'MET' if met else 'MISSED'}[/]"
    )


def run_instances(
    workflow: Workflow, count: int, concurrency: int, runtime: Runtime, label: str, *, one_flow_run: bool
) -> tuple[float, BatchReport]:
    from flows.batch import BatchItem, ItemOutcome, run_batch

    items = [
        BatchItem(
            source=f"bench:{label}:{n}", payload={"text": f"ACME GmbH invoice no. {n} - total EUR 120.50"}
        )
        for n in range(count)
    ]
    done = 0
    step = max(1, count // 10)
    started = time.perf_counter()

    def progress(_: ItemOutcome) -> None:
        nonlocal done
        done += 1
        if done % step == 0 or done == count:
            console.print(f"  {label}: {done}/{count} after {time.perf_counter() - started:.1f} s")

    report = run_batch(
        workflow, items, runtime, concurrency=concurrency, on_outcome=progress, one_flow_run=one_flow_run
    )
    return time.perf_counter() - started, report


def run_bare_flows(count: int, concurrency: int) -> tuple[float, list[float]]:
    """``count`` runs of a Prefect flow calling one empty task; (wall s, seconds per flow run)."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    @task(name="bench-noop", cache_policy=NO_CACHE, persist_result=False)
    def noop(value: int) -> int:
        return value

    @flow(name="bench-bare")
    def bare(value: int) -> int:
        return noop(value)

    def one(value: int) -> float:
        t0 = time.perf_counter()
        bare(value)
        return time.perf_counter() - t0

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        durations = list(pool.map(one, range(count)))
    wall = time.perf_counter() - started
    console.print(f"  bare Prefect flows: {count}/{count} after {wall:.1f} s")
    return wall, durations


def db_statuses(runtime: Runtime, workflow: str) -> Counter[str]:
    from sqlalchemy import func
    from sqlmodel import Session, select

    from storage.models import WorkflowInstance

    query = (
        select(WorkflowInstance.status, func.count())
        .where(WorkflowInstance.workflow == workflow)
        .group_by(WorkflowInstance.status)
    )
    with Session(runtime.store.engine) as session:
        return Counter({status: int(count) for status, count in session.exec(query).all()})


def stopped_instances(runtime: Runtime, workflow: str) -> list[list[object]]:
    """(status, failed step, failure class, count, first error) of instances not completed."""
    from sqlmodel import Session, select

    from storage.models import WorkflowInstance

    query = select(
        WorkflowInstance.status,
        WorkflowInstance.failed_step,
        WorkflowInstance.failure_class,
        WorkflowInstance.error,
    ).where(WorkflowInstance.workflow == workflow, WorkflowInstance.status != "completed")
    groups: dict[tuple[str, str, str], list[str]] = {}
    with Session(runtime.store.engine) as session:
        for status, step, failure, message in session.exec(query).all():
            groups.setdefault((status, step or "-", failure or "-"), []).append(message or "")
    return [
        [status, step, failure, len(errors), errors[0][:90]]
        for (status, step, failure), errors in sorted(groups.items())
    ]


def instance_durations(runtime: Runtime, workflow: str) -> list[float]:
    """Seconds from creation to finish of each finished instance of ``workflow``."""
    from sqlmodel import Session, col, select

    from storage.models import WorkflowInstance

    query = select(WorkflowInstance.created_at, WorkflowInstance.finished_at).where(
        WorkflowInstance.workflow == workflow, col(WorkflowInstance.finished_at).is_not(None)
    )
    with Session(runtime.store.engine) as session:
        return [(end - start).total_seconds() for start, end in session.exec(query).all() if end is not None]


def attempt_figures(runtime: Runtime, workflow: str) -> tuple[list[float], list[float], int]:
    """(wait_s of each attempt, latency_ms of each attempt, attempt count) for ``workflow``."""
    from sqlmodel import Session, col, select

    from storage.models import Attempt, WorkflowInstance

    query = (
        select(Attempt.wait_s, Attempt.latency_ms)
        .join(WorkflowInstance, col(WorkflowInstance.id) == col(Attempt.instance_id))
        .where(WorkflowInstance.workflow == workflow)
    )
    with Session(runtime.store.engine) as session:
        rows = session.exec(query).all()
    return [w or 0.0 for w, _ in rows], [lat for _, lat in rows if lat is not None], len(rows)


if __name__ == "__main__":
    raise SystemExit(main())
