"""Chaos: faults from the process, the database and the provider at once, over 1,000 instances.

- SQLite, as an operator runs it: `stepline run` over a JSONL batch, SIGKILLed
  at random points six times and frozen (SIGSTOP) past its lease once, each
  time followed by `stepline recover --replay` from another process; then the
  batch is run to its end.
- PostgreSQL, in process: a batch while every connection of the store is
  terminated (`pg_terminate_backend`) every ~1.5 s; then recovery and replay.

Both with transient provider faults (429 with retry-after, 503) on the side.
The invariants (``tests.chaos.invariants``) are read from the database by
another connection and from the provider's own request log.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.invariants import ATTEMPT_SQL, INSTANCE_SQL, STEP_RUN_SQL, answer, check, percentiles
from tests.cli.conftest import Cli
from tests.databases import postgres_rows, postgres_schema_url, sqlite_rows
from tests.servers import OpenAIServer, Reply, error

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(1500)]

WORKFLOW = "file-invoice-chaos"
SQLITE_INSTANCES = 450
POSTGRES_INSTANCES = 560
KILLS = 6

CATALOG = """
workflow_modules = ["tests.chaos.workflows"]

[retry]
base_delay_s = 0.02
max_delay_s = 0.1
max_retry_after_s = 5.0

[workers]
heartbeat_s = 1
lease_s = 4

[providers.chaos]
kind = "openai"
base_url = "{url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 10.0

[models.gpt-chaos]
provider = "chaos"
model = "gpt-chaos"
tier = "cheap"
structured_mode = "tools"
"""


def flaky(rate: float, seed: int) -> Callable[[dict[str, Any]], Reply]:
    """Valid answers, with ``rate`` of requests failing transiently (retried within the step)."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def reply(body: dict[str, Any]) -> Reply:
        with lock:
            roll = rng.random()
        if roll < rate / 2:
            return error(429, retry_after=0.02)
        if roll < rate:
            return error(503)
        return answer(body)

    return reply


def inputs(count: int, prefix: str) -> list[dict[str, str]]:
    return [{"text": f"Invoice {prefix}-{n:05d} from Acme, total EUR 12.50"} for n in range(count)]


# SQLite: SIGKILL and SIGSTOP of the real command -----------------------------------------------


class Operator:
    """`stepline` commands in one folder, as an operator's terminal would run them."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.log = (cli.folder / "runs.log").open("a")

    def start_batch(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stepline",
                "run",
                WORKFLOW,
                "--input",
                "inputs.jsonl",
                "--new-only",
                "-c",
                "8",
            ],
            cwd=self.cli.folder,
            env=self.cli.env,
            stdout=self.log,
            stderr=self.log,
        )

    def recover(self) -> subprocess.CompletedProcess[str]:
        result = self.cli("recover", "--replay", "--concurrency", "8", "--json")
        self.log.write(f"--- recover --replay: {result.returncode}\n{result.stdout}{result.stderr}\n")
        self.log.flush()
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def close(self) -> None:
        self.log.close()


def freeze_outside_a_write(pid: int, database: Path) -> None:
    """SIGSTOP ``pid`` at a moment it holds no SQLite write lock.

    A process frozen mid-transaction would hold SQLite's single write lock and
    stall every other writer (that is SQLite, not Stepline); a pause of a worker
    is modelled between its writes, as most real freezes land.
    """
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        with closing(sqlite3.connect(database, timeout=0.05)) as probe:
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.rollback()
                return
            except sqlite3.OperationalError:
                pass
        os.kill(pid, signal.SIGCONT)
        time.sleep(random.uniform(0.005, 0.03))
    raise AssertionError("the worker always held the write lock")


def wait_for(server: OpenAIServer, count: int, runner: subprocess.Popen[bytes], timeout: float = 300) -> bool:
    """Until the server saw ``count`` requests (True) or the runner ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(server.requests) >= count:
            return True
        if runner.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError(f"no progress: {len(server.requests)} requests")


def first_request_after(server: OpenAIServer, moment: float) -> float | None:
    later = [r.timestamp for r in server.requests if r.timestamp >= moment]
    return min(later) - moment if later else None


def test_sigkill_and_a_frozen_worker_on_sqlite_lose_nothing(
    cli: Cli, openai_server: OpenAIServer, report: Callable[[str], None]
) -> None:
    (cli.folder / "stepline.toml").write_text(CATALOG.format(url=openai_server.base_url))
    (cli.folder / "inputs.jsonl").write_text(
        "".join(json.dumps(item) + "\n" for item in inputs(SQLITE_INSTANCES, "doc"))
    )
    openai_server.default = flaky(0.1, seed=7)
    rng = random.Random(11)
    operator = Operator(cli)
    kills, stalls, resumes, replayed = 0, 0, [], 0
    started = time.perf_counter()
    try:
        runner = operator.start_batch()
        for episode in range(KILLS + 1):
            target = len(openai_server.requests) + rng.randint(60, 140)
            if not wait_for(openai_server, target, runner):
                break  # the batch ended before this episode: no more to interrupt
            moment = time.time()
            if episode == 2:  # a worker frozen past its lease, then woken: it must write nothing
                freeze_outside_a_write(runner.pid, cli.database)
                time.sleep(4 + 1.5)  # lease_s = 4
                moment = time.time()
                recovered = operator.recover()
                os.kill(runner.pid, signal.SIGCONT)
                stalls += 1
            else:
                runner.kill()
                runner.wait(timeout=60)
                kills += 1
                moment = time.time()
                recovered = operator.recover()
                runner = operator.start_batch()
            assert recovered.returncode in (0, 1), recovered.stderr
            replays = [json.loads(line) for line in recovered.stdout.splitlines() if '"replayed"' in line]
            replayed += len(replays)
            resumed = first_request_after(openai_server, moment)
            if replays and resumed is not None:
                resumes.append(resumed)
        runner.wait(timeout=900)
        operator.recover()  # anything the last kill or the freeze left paused
        for row in sqlite_rows(cli.database, "select id from workflow_instance where status != 'completed'"):
            again = cli("replay", str(row[0]))  # paused by provider faults that outlasted the retries
            assert again.returncode in (0, 1), again.stderr
    finally:
        operator.close()
    elapsed = time.perf_counter() - started

    verdict = check(
        openai_server,
        sqlite_rows(cli.database, INSTANCE_SQL),
        sqlite_rows(cli.database, STEP_RUN_SQL),
        sqlite_rows(cli.database, ATTEMPT_SQL),
        SQLITE_INSTANCES,
    )
    report(
        f"chaos, SQLite: {verdict.instances} instances in {elapsed:.0f} s through `stepline run`, "
        f"{kills} SIGKILLs and {stalls} freeze past the lease (SIGSTOP, then SIGCONT), each followed by "
        f"`stepline recover --replay` ({replayed} replays); {verdict.requests} requests, "
        f"{verdict.attempts} attempt rows, {verdict.resent} re-sent after a crash, "
        f"{verdict.cut_off} cut off mid-body by a kill, {verdict.crossed} "
        "recorded before the freeze but sent after it (kept as superseded)"
    )
    report(f"  resume latency (recover started -> first resumed request): {percentiles(resumes)}")
    report(f"  end state: {dict(verdict.statuses)}; invariant violations: {len(verdict.problems)}")
    assert kills >= 5
    assert stalls == 1
    assert verdict.problems == [], verdict.problems


# PostgreSQL: connections terminated under a running batch ---------------------------------------


class Terminator:
    """Terminates every backend of one application name every ``period`` seconds, from a thread."""

    def __init__(self, application: str, period: float = 1.5) -> None:
        self.application = application
        self.period = period
        self.terminated = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Terminator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        import psycopg

        from tests.databases import _PLAIN

        with psycopg.connect(_PLAIN, autocommit=True) as conn:
            while not self._stop.wait(self.period * random.uniform(0.7, 1.3)):
                rows = conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where application_name = %s and pid <> pg_backend_pid()",
                    (self.application,),
                ).fetchall()
                self.rounds += 1
                self.terminated += sum(1 for (done,) in rows if done)


@pytest.fixture
def chaos_postgres() -> Iterator[tuple[str, str]]:
    application = f"stepline-chaos-{uuid.uuid4().hex[:8]}"
    with postgres_schema_url() as url:
        yield f"{url}&application_name={application}", application


def test_terminated_database_connections_lose_nothing_on_postgresql(
    chaos_postgres: tuple[str, str],
    openai_server: OpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    report: Callable[[str], None],
) -> None:
    from flows.batch import BatchItem, run_batch
    from flows.instances import replay
    from flows.recovery import find_lost, recover
    from flows.registry import get_workflow
    from flows.runtime import Runtime
    from steps.settings import load_settings

    url, application = chaos_postgres
    catalog = tmp_path / "stepline.toml"
    catalog.write_text(CATALOG.format(url=openai_server.base_url))
    monkeypatch.setenv("STEPLINE_CONFIG", str(catalog))
    monkeypatch.setenv("STEPLINE_DATABASE_URL", url)
    monkeypatch.setenv("STEPLINE_TEST_OPENAI_KEY", "sk-test-chaos-0123456789")
    openai_server.default = flaky(0.1, seed=9)
    items = [
        BatchItem(f"inputs.jsonl:{n + 1}", item) for n, item in enumerate(inputs(POSTGRES_INSTANCES, "doc"))
    ]
    started = time.perf_counter()
    with Runtime.open(load_settings()) as runtime:
        workflow = get_workflow(WORKFLOW)
        with Terminator(application) as terminator:
            batch = run_batch(workflow, items, runtime, concurrency=8)
        during = batch.counts()
        why = Counter(o.failure_class for o in batch.outcomes if o.status != "completed")
        # Recovery, as `stepline recover --replay` does it: lost leases, rows left open, replays.
        time.sleep(runtime.settings.workers.lease_s + 1)
        for lost in find_lost(runtime.store, runtime.settings):
            recover(runtime.store, runtime.settings, lost)
        swept = runtime.store.close_abandoned("storage")
        replayed = 0
        for _ in range(3):
            stopped = [i for i in runtime.store.list_instances(limit=10_000) if i.status != "completed"]
            for instance in stopped:
                replay(instance.id, runtime)
                replayed += 1
    elapsed = time.perf_counter() - started

    verdict = check(
        openai_server,
        postgres_rows(url, INSTANCE_SQL),
        postgres_rows(url, STEP_RUN_SQL),
        postgres_rows(url, ATTEMPT_SQL),
        POSTGRES_INSTANCES,
    )
    report(
        f"chaos, PostgreSQL: {verdict.instances} instances in {elapsed:.0f} s, 8 at a time, while "
        f"{terminator.terminated} backends were terminated in {terminator.rounds} rounds (~1.5 s apart); "
        f"{verdict.requests} requests, {verdict.attempts} attempt rows"
    )
    report(
        f"  batch outcome under the terminations: {dict(during)} (stopped by {dict(why)}); "
        f"then {swept} instance(s) had open rows "
        f"closed and {replayed} replay(s) ran; end state: {dict(verdict.statuses)}; "
        f"invariant violations: {len(verdict.problems)}"
    )
    assert terminator.terminated >= 20
    assert "crashed" not in during, batch.outcomes
    assert verdict.problems == [], verdict.problems
