"""Shared pieces of the benchmark scripts in ``bench/``: environment, catalogs, databases, figures.

Not a benchmark itself. Importing it sets the Prefect environment variables the scripts need,
so import it before anything that imports Prefect (the scripts import Stepline's modules inside
their functions for that reason). The scripts import it as ``common`` because they run as
``uv run python bench/<name>.py``, which puts ``bench/`` first on ``sys.path`` (so no script
here may share a name with a Stepline package).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

# Before Prefect is imported anywhere: quiet logs, no telemetry, patient temporary server.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The temporary API server, stopped at exit while recording task-run events, logs the batch it
# was writing as an ERROR with tracebacks; nothing measured depends on it. Set it to see them.
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DO_NOT_TRACK", "1")

if TYPE_CHECKING:
    from flows.instances import RunResult
    from flows.runtime import Runtime

__all__ = [
    "BENCH_KEY_ENV",
    "DEFAULT_PG",
    "MODEL_ID",
    "UNLIMITED_MODEL",
    "Served",
    "console",
    "database_url",
    "describe_url",
    "is_postgres",
    "loopback_catalog",
    "open_runtime",
    "openai_server",
    "percentile",
    "print_table",
    "require_completed",
    "served",
    "start_prefect",
    "summary_ms",
]

BENCH_KEY_ENV = "STEPLINE_BENCH_OPENAI_KEY"
"""The API-key variable the bench catalog's provider names (any value works on loopback)."""
MODEL_ID = "gpt-bench"
"""The catalog model every loopback benchmark pins."""
UNLIMITED_MODEL = "gpt-4o-mini-unlimited"
"""The provider model name of ``gpt-bench-unlimited``, which a server-side limiter may let through."""
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

console = Console(width=120)


def loopback_catalog(
    openai_url: str,
    *,
    rpm: int | None = None,
    max_concurrency: int | None = None,
    rate_limited_retries: int = 4,
    unlimited_url: str | None = None,
) -> str:
    """A catalog with one OpenAI model (tools mode) served by a loopback server.

    ``rpm`` / ``max_concurrency`` become the model's client-side limits (steps/limits.py).
    An ``unlimited`` twin of the model, without limits, serves calibration runs (from
    ``unlimited_url`` when given, a server that enforces no limit).
    """
    limits = ""
    if rpm is not None:
        limits += f"rpm = {rpm}\n"
    if max_concurrency is not None:
        limits += f"max_concurrency = {max_concurrency}\n"
    return f"""
[retry]
base_delay_s = 0.05
max_delay_s = 2.0
max_retry_after_s = 120.0
[retry.retries]
rate_limited = {rate_limited_retries}
overloaded = 3
unavailable = 2
timeout = 2
connection = 2

[providers.bench]
kind = "openai"
base_url = "{openai_url}"
api_key_env = "{BENCH_KEY_ENV}"
timeout_s = 30.0

[models.{MODEL_ID}]
provider = "bench"
model = "gpt-4o-mini"
tier = "cheap"
structured_mode = "tools"
input_price = 0.15
output_price = 0.60
{limits}
[providers.bench-free]
kind = "openai"
base_url = "{unlimited_url or openai_url}"
api_key_env = "{BENCH_KEY_ENV}"
timeout_s = 30.0

[models.{MODEL_ID}-unlimited]
provider = "bench-free"
model = "{UNLIMITED_MODEL}"
tier = "cheap"
structured_mode = "tools"
input_price = 0.15
output_price = 0.60
"""


@contextmanager
def openai_server(payload: dict[str, Any], *, in_process: bool = True) -> Iterator[str]:
    """A loopback ``OpenAIServer`` answering ``ok(payload)``; yields its base URL.

    ``in_process=False`` runs it in a child process, so that its threads do not compete with
    the code being measured for this interpreter's GIL (a real provider is not in-process).
    """
    from tests.servers import OpenAIServer, ok

    if in_process:
        with OpenAIServer(default=ok(payload)) as server:
            yield server.base_url
        return
    with served(payload) as server:
        yield server.url


@dataclass
class Served:
    """A loopback server in a child process: its URL, and once it stopped, what it received."""

    url: str
    requests: int = 0
    rate_limited: int = 0
    arrivals: list[float] = field(default_factory=list)
    """Monotonic arrival times of the requests it answered (not 429)."""


@contextmanager
def served(payload: dict[str, Any], *, rpm: int | None = None) -> Iterator[Served]:
    """An ``OpenAIServer`` answering ``ok(payload)`` in a child process (off this GIL), enforcing
    ``rpm`` as a provider does when given (429 + retry-after); its figures are filled on exit."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    stop = context.Event()
    process = context.Process(target=_serve, args=(payload, child, stop, rpm), daemon=True)
    process.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the loopback server process did not start")
        server = Served(str(parent.recv()))
        yield server
    finally:
        stop.set()
        if parent.poll(30):
            server.requests, server.rate_limited, server.arrivals = parent.recv()
        process.join(10)


def _serve(payload: dict[str, Any], conn: Any, stop: Any, rpm: int | None) -> None:
    from tests.servers import OpenAIServer, ok

    with OpenAIServer(default=ok(payload), rpm=rpm) as server:
        conn.send(server.base_url)
        stop.wait()
        received = server.requests
    answered = [r.monotonic for r in received if r.reply is None or r.reply.status != 429]
    conn.send((len(received), len(received) - len(answered), answered))


def open_runtime(folder: Path, catalog: str, database: str) -> Runtime:
    """A Runtime built as ``stepline`` builds it: catalog file, env vars, ``Runtime.open``."""
    from flows.runtime import Runtime
    from steps.settings import load_settings

    path = folder / "stepline.toml"
    path.write_text(catalog)
    os.environ["STEPLINE_CONFIG"] = str(path)
    os.environ["STEPLINE_DATABASE_URL"] = database
    os.environ[BENCH_KEY_ENV] = "sk-bench-0123456789"
    return Runtime.open(load_settings())


def require_completed(result: RunResult, what: str) -> None:
    """Stop the bench with the instance's own reason, not a traceback, when it did not complete."""
    from steps.errors import FailureClass
    from storage.models import InstanceStatus

    if result.status is InstanceStatus.COMPLETED:
        return
    hint = ""
    if result.failure_class == FailureClass.ORCHESTRATOR:  # seen: the local server busy with a run before
        hint = (
            "; Prefect's API server was overloaded, often still busy with an earlier run's events: "
            "wait a minute, or restart it with `uv run stepline server stop`, and run the bench again"
        )
    raise SystemExit(
        f"{what} ended {result.status.value} at step {result.failed_step!r} "
        f"({result.failure_class}): {result.error}{hint}"
    )


def start_prefect() -> float:
    """Start Prefect's temporary API server (when none is configured); the seconds it took."""
    from flows.local_server import ensure_prefect_api

    started = time.perf_counter()
    ensure_prefect_api()
    return time.perf_counter() - started


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def describe_url(url: str) -> str:
    """The URL without its password or query (for printed tables)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(query={}).render_as_string(hide_password=True)


@contextmanager
def database_url(url: str | None, folder: Path) -> Iterator[str]:
    """A fresh, isolated database: a SQLite file in ``folder``, or a new PostgreSQL schema.

    For a PostgreSQL URL, a schema ``stepline_bench_<hex>`` is created and the yielded URL
    puts it first on the ``search_path`` (as tests/databases.py does); it is dropped after.
    """
    if url is None or url.startswith("sqlite"):
        yield url or f"sqlite:///{folder / 'bench.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    plain = parsed.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    schema = f"stepline_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # a hex name we made: nothing to inject
    try:
        scoped = parsed.set(drivername="postgresql+psycopg").update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        yield scoped.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p95, mean) of ``values`` (already in ms)."""
    if not values:
        return math.nan, math.nan, math.nan
    return percentile(values, 50), percentile(values, 95), statistics.fmean(values)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Rich table; numbers right-aligned, floats with 2 decimals."""
    table = Table(title=title, title_justify="left")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    console.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
