"""Schedules: checked as Prefect would check them, served with Prefect's own runner, one source of truth.

The integration test starts a real Prefect server on loopback and a real
`stepline serve` process, reads the deployments back through the Prefect
client, runs one to completion, then deploys the generated prefect.yaml to a
process work pool on the same server and compares the schedules.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows.schedules import BATCH_FLOW, WORK_POOL, prefect_yaml, schedule_problems
from steps.errors import ConfigError
from steps.settings import DEFAULT_CATALOG, Settings, load_settings
from tests.databases import sqlite_rows
from tests.servers import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "contracts"


def settings_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Settings:
    path = tmp_path / "stepline.toml"
    path.write_text(text)
    monkeypatch.setenv("STEPLINE_CONFIG", str(path))
    monkeypatch.chdir(tmp_path)
    return load_settings()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            'cron = "61 * * * *"',
            "schedules.bad: Prefect rejects this schedule (cron: Value error, Invalid cron string",
        ),
        ('cron = "0 7 * * *"\ntimezone = "Mars/Olympus_Mons"', "timezone: Value error, Invalid timezone"),
        ('interval_s = 60\nworkflow = "contract-reveiw"', "did you mean 'contract-review'?"),
    ],
)
def test_a_schedule_prefect_would_reject_is_named_with_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schedule: str, message: str
) -> None:
    workflow = "" if "workflow" in schedule else 'workflow = "contract-review"\n'
    settings = settings_from(
        tmp_path, monkeypatch, f'[schedules.bad]\n{workflow}{schedule}\ninput_dir = "inbox"\n'
    )
    problems = schedule_problems(settings)
    assert len(problems) == 1
    assert message in problems[0]


def test_a_missing_parameters_file_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        tmp_path,
        monkeypatch,
        '[schedules.daily]\nworkflow = "contract-review"\ncron = "0 6 * * *"\nparameters_file = "p.jsonl"\n',
    )
    (problem,) = schedule_problems(settings)
    assert problem.startswith(f"schedules.daily.parameters_file: {tmp_path / 'p.jsonl'} does not exist")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('cron = "0 6 * * *"\ninterval_s = 60\ninput_dir = "in"', "set exactly one of cron"),
        ('interval_s = 60\ninput_dir = "in"\nparameters_file = "p.json"', "set exactly one of input_dir"),
        ('interval_s = 0\ninput_dir = "in"', "schedules.s.interval_s: Input should be greater than 0"),
    ],
)
def test_schedule_shape_errors_name_the_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    path = tmp_path / "stepline.toml"
    path.write_text(f'[schedules.s]\nworkflow = "contract-review"\n{body}\n')
    monkeypatch.setenv("STEPLINE_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(path) in caught.value.message
    assert message in caught.value.message


def test_the_shipped_prefect_yaml_is_the_built_in_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_CONFIG", str(DEFAULT_CATALOG))
    expected = prefect_yaml(load_settings(), source="steps/default_catalog.toml (the built-in catalog)")
    assert (ROOT / "prefect.yaml").read_text() == expected, (
        "prefect.yaml is stale: regenerate it with `uv run stepline schedules --prefect-yaml > prefect.yaml`"
    )


# -- a real Prefect server, `stepline serve`, and `prefect deploy` ----------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """`prefect server start` on loopback with its own PREFECT_HOME; yields the API URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",  # plan scheduled runs promptly
    )
    log = (tmp_path / "prefect-server.log").open("w")
    command = [sys.executable, "-m", "prefect", "server", "start", "--no-ui", "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: _healthy(url), timeout=120, what="the Prefect server to answer")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: object, *, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_serve_registers_the_schedules_and_a_deployment_runs_to_completion(
    tmp_path: Path, prefect_server: str, openai_server: OpenAIServer
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    work = tmp_path / "work"
    (work / "inbox").mkdir(parents=True)
    lines = [json.loads(path.read_text()) for path in sorted(SAMPLES.glob("*.json"))[:2]]
    (work / "daily.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (work / "stepline.toml").write_text(
        f"""
[providers.cloud]
kind = "openai"
base_url = "{openai_server.base_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 10.0

[models.small]
provider = "cloud"
model = "gpt-small"
tier = "cheap"

[models.big]
provider = "cloud"
model = "gpt-big"
tier = "capable"

[schedules.nightly-contracts]
workflow = "contract-review"
cron = "30 2 * * mon-fri"
timezone = "Europe/Berlin"
parameters_file = "daily.jsonl"
concurrency = 2

[schedules.contract-inbox]
workflow = "contract-review"
interval_s = 600
input_dir = "inbox"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
    env.update(
        PREFECT_API_URL=prefect_server,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        STEPLINE_TEST_OPENAI_KEY="sk-test-serve-0123456789",
        PYTHONPATH=str(ROOT),
    )
    log = (tmp_path / "serve.log").open("w")
    served = subprocess.Popen(
        [sys.executable, "-m", "stepline", "serve"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:

            def registered() -> bool:
                names = {d.name for d in client.read_deployments()}
                return names == {"nightly-contracts", "contract-inbox"}

            wait_until(registered, timeout=120, what="`stepline serve` to register both deployments")
            nightly = client.read_deployment_by_name(f"{BATCH_FLOW}/nightly-contracts")
            (cron,) = [s.schedule for s in nightly.schedules]
            assert isinstance(cron, CronSchedule)
            assert (cron.cron, cron.timezone) == ("30 2 * * mon-fri", "Europe/Berlin")
            assert nightly.parameters == {
                "workflow": "contract-review",
                "concurrency": 2,
                "parameters_file": str(work / "daily.jsonl"),
            }
            inbox = client.read_deployment_by_name(f"{BATCH_FLOW}/contract-inbox")
            (interval,) = [s.schedule for s in inbox.schedules]
            assert isinstance(interval, IntervalSchedule)
            assert interval.interval.total_seconds() == 600
            assert inbox.parameters["input_dir"] == str(work / "inbox")

            # Prefect's own scheduler has already planned the next runs from these schedules.
            def planned() -> bool:
                runs = client.read_flow_runs()
                scheduled = {r.deployment_id for r in runs if r.state and r.state.is_scheduled()}
                return scheduled >= {nightly.id, inbox.id}

            wait_until(planned, timeout=60, what="Prefect's scheduler to plan runs of both deployments")

            run = run_deployment(f"{BATCH_FLOW}/nightly-contracts", timeout=240, poll_interval=1)
            assert not inspect.isawaitable(run)  # called from sync code
            assert run.state is not None
            assert run.state.is_completed(), (run.state, (tmp_path / "serve.log").read_text()[-3000:])

        rows = sqlite_rows(work / "stepline.db", "select status, source from workflow_instance")
        daily = work / "daily.jsonl"
        assert sorted(rows) == [("completed", f"{daily}:1"), ("completed", f"{daily}:2")]
        assert len(openai_server.requests) > 4  # both contracts went through every step

        # The same schedules as a prefect.yaml, deployed to a process work pool on the same server.
        generated = subprocess.run(
            [sys.executable, "-m", "stepline", "schedules", "--prefect-yaml"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        (tmp_path / "prefect.yaml").write_text(generated.stdout)
        prefect = [sys.executable, "-m", "prefect"]
        for command in (
            [*prefect, "work-pool", "create", WORK_POOL, "--type", "process"],
            [*prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(tmp_path / "prefect.yaml")],
        ):
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stdout + done.stderr
        with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            deployed = client.read_deployment_by_name(f"{BATCH_FLOW}/nightly-contracts")
            assert deployed.work_pool_name == WORK_POOL
            assert deployed.entrypoint == "flows/schedules.py:scheduled_batch"
            (again,) = [s.schedule for s in deployed.schedules]
            assert isinstance(again, CronSchedule)
            assert (again.cron, again.timezone) == (cron.cron, cron.timezone)
            assert deployed.parameters["parameters_file"] == "daily.jsonl"  # relative to the worker's folder
    finally:
        served.terminate()
        served.wait(timeout=30)
        log.close()
