"""Team scale: a Prefect server, a process work pool and two workers sharing PostgreSQL and limits.

Everything runs as an operator would run it: `deploy/team.sh up` starts the
server, creates the pool, deploys from prefect.yaml and starts two workers;
`stepline submit` queues 200 instances in 20 flow runs; a fault storm hits
the loopback provider; one worker is killed (with its flow runs) mid-run;
`stepline recover --replay` resumes what it held. Then: every instance ended
exactly once in a known state, no attempt row is duplicated, and the two
workers together never sent faster than the model's rpm.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from storage.db import open_engine
from storage.models import Attempt, StepRun, WorkflowInstance
from storage.store import Store
from tests.databases import postgres_database_url, postgres_schema_url
from tests.flows.test_fault_mix import storm
from tests.flows.test_schedules import free_port, wait_until
from tests.servers import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 200
PER_RUN = 10
RPM = 300
"""5 requests a second for both workers together: below what they would send unlimited."""

CATALOG = """
workflow_modules = ["tests.team.workflows"]

[retry]
base_delay_s = 0.05
max_delay_s = 0.2
max_retry_after_s = 5.0

[workers]
heartbeat_s = 2
lease_s = 15

[providers.team]
kind = "openai"
base_url = "{url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 0.5

[models.gpt-team]
provider = "team"
model = "gpt-team"
tier = "cheap"
structured_mode = "tools"
rpm = {rpm}
max_concurrency = 4
"""


class Team:
    """`deploy/team.sh` and `stepline` with one environment, as an operator's shell would have."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env

    def script(self, action: str) -> subprocess.CompletedProcess[str]:
        return self._run(["bash", str(ROOT / "deploy" / "team.sh"), action], ROOT, 400)

    def stepline(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self._run([sys.executable, "-m", "stepline", *args], self.folder, timeout)

    def python(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """This interpreter in the project root, with the operator's environment."""
        return self._run([sys.executable, *args], ROOT, timeout)

    def _run(self, argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def pid(self, name: str) -> int:
        return int((self.folder / "team" / f"{name}.pid").read_text())

    def log(self, name: str) -> str:
        path = self.folder / "team" / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else "(no log)"


@pytest.fixture
def team(tmp_path: Path, openai_server: OpenAIServer) -> Iterator[tuple[Team, str]]:
    with postgres_schema_url() as database_url, postgres_database_url() as prefect_database_url:
        config = tmp_path / "stepline.toml"
        config.write_text(CATALOG.format(url=openai_server.base_url, rpm=RPM))
        venv_bin = str(Path(sys.executable).parent)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
        env.update(
            PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=str(ROOT),
            STEPLINE_CONFIG=str(config),
            STEPLINE_DATABASE_URL=database_url,
            STEPLINE_TEST_OPENAI_KEY="sk-test-team-0123456789",
            STEPLINE_TEAM_DIR=str(tmp_path / "team"),
            STEPLINE_TEAM_WORKERS="2",
            STEPLINE_TEAM_WORKER_LIMIT="2",
            STEPLINE_TEAM_DEPLOY="submitted",
            PREFECT_PORT=str(port),
            PREFECT_API_URL=f"http://127.0.0.1:{port}/api",  # as `deploy/team.sh up` says to set
            PREFECT_HOME=str(tmp_path / "prefect-home"),
            # The server's own tables on PostgreSQL too: on SQLite, two workers' task-run
            # updates and limit leases meet "database is locked".
            PREFECT_API_DATABASE_CONNECTION_URL=prefect_database_url,
            PREFECT_UI_ENABLED="false",
            PREFECT_LOGGING_LEVEL="WARNING",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        handle = Team(tmp_path, env)
        started = handle.script("up")
        try:
            assert started.returncode == 0, started.stdout + started.stderr + handle.log("server")
            yield handle, database_url
        finally:
            handle.script("down")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc (a worker's flow runs run in their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def flow_run_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def statuses(store: Store) -> Counter[str]:
    with Session(store.engine) as session:
        rows = session.exec(select(WorkflowInstance.status, func.count()).group_by(WorkflowInstance.status))
        return Counter(dict(rows.all()))


BROWSE = """
import asyncio, sys

from textual.widgets import DataTable

from storage.db import open_engine
from storage.store import Store
from tui.app import StepLineApp
from tui.screens.instance import InstanceScreen


async def browse(store: Store) -> int:
    app = StepLineApp(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("#instances", DataTable)
        assert table.row_count > 0
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, InstanceScreen)
        return table.row_count


store = Store(open_engine(sys.argv[1], migrate=False))
try:
    print(asyncio.run(browse(store)))
finally:
    store.close()
"""
"""The operator's TUI on the shared store: paints the list and opens an instance; prints the rows."""


def operator_reads(operator: Team, store: Store) -> str:
    """`stepline instances`, `show`, `costs` and the TUI on the shared store, mid-run."""
    listed = operator.stepline("instances", "--json", "--limit", "500")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == INSTANCES
    seen = Counter(row["status"] for row in rows)
    done = next(row["id"] for row in rows if row["status"] == "completed")
    shown = operator.stepline("show", done, "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["instance"]["status"] == "completed"
    assert {s["step"] for s in record["step_runs"]} == {"extract-invoice", "categorize"}
    costs = operator.stepline("costs", "--json")
    assert costs.returncode == 0, costs.stderr

    # The TUI runs in a process of its own, as an operator's would: in this one, its painting
    # would hold the loopback provider's threads and bunch the arrival times the limit is judged by.
    browsed = operator.python("-c", BROWSE, operator.env["STEPLINE_DATABASE_URL"])
    assert browsed.returncode == 0, browsed.stderr[-3000:]
    painted = int(browsed.stdout.strip().splitlines()[-1])
    return (
        f"`stepline instances` listed {len(rows)} ({dict(seen)}), `show` and `costs` answered, "
        f"the TUI painted {painted} rows and opened one"
    )


@pytest.mark.timeout(1800)
def test_two_workers_share_the_store_and_the_limit_and_a_killed_one_loses_nothing(
    team: tuple[Team, str],
    openai_server: OpenAIServer,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    operator, database_url = team
    injected: Counter[str] = Counter()
    reply = storm(seed=88, injected=injected)

    def answer(body: dict[str, Any]) -> Any:
        return reply(body)

    openai_server.default = answer
    inputs = tmp_path / "invoices.jsonl"
    inputs.write_text(
        "".join(json.dumps({"text": f"Invoice {n}: ACME GmbH, EUR {n}.50"}) + "\n" for n in range(INSTANCES))
    )
    started = time.monotonic()
    submitted = operator.stepline(
        "submit", "file-invoice-team", "--input", str(inputs), "--per-run", str(PER_RUN), "--json"
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    receipt = json.loads(submitted.stdout.strip().splitlines()[-1])
    assert len(receipt["queued"]) == INSTANCES
    assert len(receipt["flow_runs"]) == INSTANCES // PER_RUN

    store = Store(open_engine(database_url, migrate=False))
    try:
        # While both workers write: the CLI and the TUI read the same store, unchanged.
        wait_until(lambda: statuses(store)["completed"] >= 5, timeout=300, what="the first instances")
        shared = operator_reads(operator, store)
        # Kill worker-1 and its flow runs (as a lost machine would) once it is mid-run.
        victim = operator.pid("worker-1")

        def victim_busy() -> bool:
            done = statuses(store)
            running = [flow_run_of(p) for p in descendants(victim)]
            return done["completed"] >= 30 and any(running)

        wait_until(victim_busy, timeout=600, what="worker-1 to be mid-run with 30 instances done")
        killed = descendants(victim)
        killed_runs = {run for run in map(flow_run_of, killed) if run}
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGKILL)
        at_kill = statuses(store)

        # The other worker goes on with every flow run that was not on the dead one.
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
        from prefect.settings import PREFECT_API_URL, temporary_settings

        api = operator.env["PREFECT_API_URL"]
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("stepline-queued/submitted")
            submitted_runs = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]))

            def survivors_done() -> bool:
                runs = client.read_flow_runs(flow_run_filter=submitted_runs, limit=200)
                assert len(runs) == len(receipt["flow_runs"])
                return all(
                    r.state is not None and r.state.is_final() for r in runs if str(r.id) not in killed_runs
                )

            wait_until(survivors_done, timeout=900, what="worker-2 to finish every other flow run")
            final_runs = Counter(
                r.state.type.value if r.state else "?"
                for r in client.read_flow_runs(flow_run_filter=submitted_runs, limit=200)
            )
        held = statuses(store)
        time.sleep(16)  # past the lease: the dead flow runs' untaken instances count as stranded

        # The operator's one command: hand back what the dead worker held, and replay it.
        recovered = operator.stepline("recover", "--replay", "--json")
        assert recovered.returncode in (0, 1), recovered.stdout + recovered.stderr
        replayed = [json.loads(line) for line in recovered.stdout.splitlines() if '"replayed"' in line]
        elapsed = time.monotonic() - started

        after = statuses(store)
        instances = store.list_instances(limit=10_000)
        with Session(store.engine) as session:
            attempts = session.exec(select(Attempt)).all()
            step_runs = session.exec(select(StepRun)).all()
            in_flight = session.exec(
                select(func.count()).select_from(Attempt).where(col(Attempt.finished_at).is_(None))
            ).one()
    finally:
        store.close()

    requests = openai_server.requests
    times = sorted(r.monotonic for r in requests)
    busiest, busiest_10s = (busiest_window(times, seconds) for seconds in (1.0, 10.0))
    faults = sum(n for kind, n in injected.items() if kind != "ok")
    report(
        f"team scale: {INSTANCES} instances in {len(receipt['flow_runs'])} flow runs, 2 process workers, "
        f"PostgreSQL; {elapsed:.0f} s; {len(requests)} requests, {faults} faults injected; "
        f"busiest second {busiest} requests, busiest 10 s {busiest_10s} (limit {RPM // 60}/s)"
    )
    report(
        f"  worker-1 killed with {len(killed_runs)} flow run(s) at {dict(at_kill)}; "
        f"others finished at {dict(held)} ({dict(final_runs)} flow runs); "
        f"`stepline recover --replay` replayed {len(replayed)}: "
        f"{dict(Counter(r['replayed'] for r in replayed))}"
    )
    report(f"  while workers wrote: {shared}")
    report("  instances: " + ", ".join(f"{k} {v}" for k, v in sorted(after.items())))

    # Every submitted instance exists once and ended in a known state.
    assert len(instances) == INSTANCES
    assert set(after) <= {"completed", "needs_review", "paused"}, after
    assert after["completed"] > INSTANCES // 2
    assert len(replayed) >= 1  # the dead worker held something, and it was resumed
    assert not [i.id for i in instances if i.failure_class == "worker_lost" and i.status != "completed"]
    assert in_flight == 0
    # Exactly once: no step of an instance completed twice in one generation, and every
    # completed instance has one completed run of each step in its last generation.
    keys = Counter((s.instance_id, s.step, s.index, s.generation) for s in step_runs)
    assert max(keys.values()) == 1
    completed_runs = Counter((s.instance_id, s.step) for s in step_runs if s.status == "completed")
    for instance in instances:
        if instance.status == "completed":
            assert completed_runs[(instance.id, "extract-invoice")] == 1, instance.id
            assert completed_runs[(instance.id, "categorize")] == 1, instance.id
    # No attempt row duplicated; every request that reached the provider is a row. A row
    # written just before its worker was killed may not have reached it.
    attempt_keys = Counter((a.step_run_id, a.attempt_number) for a in attempts)
    assert max(attempt_keys.values()) == 1
    lost_in_flight = sum(1 for a in attempts if a.failure_class == "worker_lost")
    assert len(requests) <= len(attempts) <= len(requests) + lost_in_flight
    # The two workers together kept the model's limit (one slot decaying at rpm/60 a second):
    # Prefect's server grants the turns at least 60/rpm s apart, and evenly spaced requests put
    # at most one more than rate x window in a window. Each grant reaches its worker as an HTTP
    # answer, and the worker sends at once (the turn is taken as the request leaves): on this
    # loaded 2-core machine that answer's delay varies by up to about one spacing, which can
    # bring one more request into a 1 s window (seen: 6 after the fix; 7 when the attempt's
    # database write still sat between the grant and the send). Over 10 s it cannot add up.
    assert busiest <= RPM // 60 + 2, busiest
    assert busiest_10s <= 10 * RPM // 60 + 1, busiest_10s


def busiest_window(times: list[float], seconds: float) -> int:
    """The most requests that arrived within any ``seconds`` (times sorted)."""
    most, first = 0, 0
    for last, arrived in enumerate(times):
        while arrived - times[first] >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most
