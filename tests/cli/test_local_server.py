"""The shared local Prefect server, as a user meets it: real `stepline` processes, no PREFECT_API_URL.

Each server start costs 10-20 s on 2 cores, so the module shares one Stepline home (and
its one server) and starts a server only twice: once from three concurrent commands, once
to replace a stale record. A finalizer stops whatever is left, so no test leaves a server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import ROOT, SAMPLE, no_traceback
from tests.servers import OpenAIServer, slow
from tests.unit.test_import_hygiene import loaded_after

STARTED = "started Prefect's local API server"

CATALOG = """
[providers.cloud]
kind = "openai"
base_url = "{base_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 60.0

[models.small]
provider = "cloud"
model = "gpt-small"
tier = "cheap"
input_price = 0.1
output_price = 0.4
"""


@dataclass
class Home:
    """One Stepline data folder (STEPLINE_HOME) and the environment of commands that use it."""

    path: Path
    env: dict[str, str]

    @property
    def server(self) -> Path:
        return self.path / "prefect-server"

    def stepline(
        self, *args: str, cwd: Path | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stepline", *args],
            cwd=cwd or self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "stepline", *args],
            cwd=cwd or self.path,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def state(self) -> dict[str, Any]:
        recorded: dict[str, Any] = json.loads((self.server / "state.json").read_text())
        return recorded

    def status(self) -> dict[str, Any]:
        result = self.stepline("server", "status", "--json")
        assert result.returncode in (0, 1), result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def servers(self) -> set[int]:
        """Live Prefect API server processes started under this home, from /proc.

        Prefect's `server start` and its temporary in-process server (uvicorn) both
        inherit the command's environment, so STEPLINE_HOME says whose they are.
        """
        mark = f"STEPLINE_HOME={self.path}".encode()
        found = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                words = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                environ = (proc / "environ").read_bytes().split(b"\0")
                zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except (OSError, IndexError):
                continue  # gone meanwhile, or not ours to read
            serving = (b"prefect" in words and b"server" in words) or b"uvicorn" in words
            if serving and not zombie and mark in environ:
                found.add(int(proc.name))
        return found


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback http)
        return json.loads(response.read())


def flow_runs(api: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        f"{api}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback http)
        runs: list[dict[str, Any]] = json.loads(response.read())
        return runs


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    path = tmp_path_factory.mktemp("stepline-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
    env.update(
        STEPLINE_HOME=str(path),
        PREFECT_HOME=str(path / "client-prefect-home"),  # no user profile naming a server
        PREFECT_LOGGING_LEVEL="WARNING",
        STEPLINE_TEST_OPENAI_KEY="sk-test-cli-0123456789",
        PYTHONPATH=str(ROOT),
    )
    shared = Home(path, env)
    yield shared
    shared.stepline("server", "stop", timeout=60)
    for pid in shared.servers():  # stop failed: leave nothing running all the same
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def running(home: Home) -> dict[str, Any]:
    """The shared server (started if an earlier test did not); its state record."""
    started = home.stepline("server", "start")
    assert started.returncode == 0, started.stderr
    return home.state()


@pytest.fixture
def workdir(tmp_path: Path, openai_server: OpenAIServer) -> Path:
    """A folder whose stepline.toml routes every step to the loopback OpenAI server."""
    (tmp_path / "stepline.toml").write_text(CATALOG.format(base_url=openai_server.base_url))
    return tmp_path


def test_the_check_and_start_code_does_not_import_prefect() -> None:
    # Prefect reads PREFECT_API_URL when imported: the URL must be set before that.
    assert "prefect" not in loaded_after("import flows.local_server")


def test_concurrent_commands_start_one_server_that_status_reports_healthy(home: Home) -> None:
    before = home.status()
    assert before["status"] == "not running"
    assert before["url"] is None

    commands = [home.popen("server", "start") for _ in range(3)]
    outputs = [c.communicate(timeout=240) for c in commands]
    finished = [(c.returncode, out, err) for c, (out, err) in zip(commands, outputs, strict=True)]

    assert [code for code, _, _ in finished] == [0, 0, 0], finished
    assert len({out.strip() for _, out, _ in finished}) == 1  # each printed the same API URL
    announcements = [err for _, _, err in finished if STARTED in err]
    assert len(announcements) == 1, finished  # one started it and said so...
    assert "`stepline server stop` stops it" in announcements[0]
    state = home.state()
    assert home.servers() == {state["pid"]}  # ...and there is one server process

    status = home.status()
    assert status["status"] == "running"
    assert status["pid"] == state["pid"]
    assert status["url"] == state["url"] == finished[0][1].strip()
    assert status["url"].startswith("http://127.0.0.1:")
    assert status["prefect_version"] == metadata.version("prefect")
    assert status["uptime_s"] >= 0
    assert status["home"] == str(home.server)
    assert get(f"{status['url']}/health") is True
    assert get(f"{status['url']}/admin/version") == metadata.version("prefect")

    text = home.stepline("server", "status")
    assert text.returncode == 0
    assert "running" in text.stdout
    assert str(state["pid"]) in text.stdout


def test_stepline_run_reuses_the_shared_server(
    home: Home, running: dict[str, Any], workdir: Path, openai_server: OpenAIServer
) -> None:
    runs_before = len(flow_runs(running["url"]))

    result = home.stepline("run", "contract-review", "--input", str(SAMPLE), cwd=workdir)

    assert result.returncode == 0, result.stderr
    no_traceback(result)
    assert json.loads(result.stdout)["title"]
    assert STARTED not in result.stderr
    assert openai_server.requests  # the steps really ran
    assert home.state()["pid"] == running["pid"]
    assert home.servers() == {running["pid"]}
    # Its flow run was recorded by the shared server, not by a temporary one.
    assert len(flow_runs(running["url"])) == runs_before + 1


def test_a_sigkilled_run_leaves_no_server_but_the_shared_one(
    home: Home, running: dict[str, Any], workdir: Path, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(slow(0.0), slow(30.0))  # the extraction answers; the first assessment hangs
    worker = home.popen("run", "contract-review", "--input", str(SAMPLE), cwd=workdir)
    try:
        openai_server.wait_for_requests(2, timeout=120)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL

    assert home.servers() == {running["pid"]}
    assert home.status()["status"] == "running"


def test_stop_leaves_nothing_and_a_stale_record_is_replaced(home: Home, running: dict[str, Any]) -> None:
    stopped = home.stepline("server", "stop", timeout=60)

    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {running['pid']}" in stopped.stderr
    assert home.servers() == set()
    assert not listening(running["port"])
    assert not (home.server / "state.json").exists()
    assert home.stepline("server", "status").returncode == 1
    again = home.stepline("server", "stop")
    assert again.returncode == 0
    assert "not running" in again.stderr

    # A record left by a server that died without `stop` (a reboot, an OOM kill).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = dict(running, pid=dead.pid, started_at=time.time() - 3600)
    (home.server / "state.json").write_text(json.dumps(stale))
    assert home.status()["status"] == "not running"

    started = home.stepline("server", "start")

    assert started.returncode == 0, started.stderr
    assert STARTED in started.stderr
    assert f"the recorded one (pid {dead.pid}) was gone" in started.stderr
    state = home.state()
    assert state["pid"] != dead.pid
    assert home.servers() == {state["pid"]}
    assert home.status()["status"] == "running"
