"""Prefect's local server killed mid-run: the run still finishes, says so, and loses nothing.

Real `stepline` processes against the shared local Prefect server (no PREFECT_API_URL), the
model a loopback server that answers each request after 0.3 s. Once a few requests have
arrived, the Prefect server is killed with SIGKILL. Every instance must still complete in
Stepline's store, the command must print its outcome and exit 3 (Prefect's API failed) within a
bounded time, and Ctrl-C during the wait for Prefect must end it within 2 s.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.conftest import ROOT, no_traceback
from tests.cli.test_local_server import CATALOG, Home
from tests.servers import OpenAIServer, slow

SAMPLES = sorted((ROOT / "samples" / "contracts").glob("*.json"))
EXIT_PREFECT_LOST = 3
BOUND_S = 45.0
"""From the kill to the command's exit: the grace for the flow run's end (10 s), the backlog's
deadline (5 s), the model calls still to make, and a loaded 2-core machine's margin."""


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    path = tmp_path_factory.mktemp("stepline-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
    env.update(
        STEPLINE_HOME=str(path),
        PREFECT_HOME=str(path / "client-prefect-home"),
        PREFECT_LOGGING_LEVEL="WARNING",
        STEPLINE_TEST_OPENAI_KEY="sk-test-cli-0123456789",
        PYTHONPATH=str(ROOT),
    )
    shared = Home(path, env)
    started = shared.stepline("server", "start")
    assert started.returncode == 0, started.stderr
    yield shared
    shared.stepline("server", "stop", timeout=60)
    for pid in shared.servers():
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def workdir(tmp_path: Path, openai_server: OpenAIServer) -> Path:
    (tmp_path / "stepline.toml").write_text(CATALOG.format(base_url=openai_server.base_url))
    openai_server.default = lambda body: slow(0.3, then=openai_server.auto_reply(body))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in range(8):  # eight contracts: the batch is mid-run when the server dies
        data = json.loads(SAMPLES[n % len(SAMPLES)].read_text())
        data["title"] = f"{data['title']} #{n}"
        (inbox / f"contract-{n}.json").write_text(json.dumps(data))
    return tmp_path


def kill_server(home: Home) -> None:
    os.killpg(home.state()["pid"], signal.SIGKILL)  # started in a session of its own: its group


def seconds_since_last_end(database: Path) -> float:
    """Wall seconds from the last instance's end, as Stepline's store recorded it, to now."""
    with sqlite3.connect(database) as connection:
        (last,) = connection.execute("SELECT max(finished_at) FROM workflow_instance").fetchone()
    ended = datetime.fromisoformat(last)
    return time.time() - (ended if ended.tzinfo else ended.replace(tzinfo=UTC)).timestamp()


def statuses(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT status, count(*) FROM workflow_instance GROUP BY status")
        return dict(rows.fetchall())


def test_a_batch_whose_prefect_server_dies_finishes_and_says_so(
    home: Home, workdir: Path, openai_server: OpenAIServer
) -> None:
    worker = home.popen("run", "contract-review", "--input", "inbox", "-c", "4", cwd=workdir)
    openai_server.wait_for_requests(6, timeout=180)
    kill_server(home)
    killed = time.monotonic()

    out, err = worker.communicate(timeout=300)
    took = time.monotonic() - killed
    after = seconds_since_last_end(workdir / "stepline.db")
    print(
        f"batch of 8, Prefect killed: exit {took:.1f} s after the kill, {after:.1f} s after the last instance"
    )

    assert worker.returncode == EXIT_PREFECT_LOST, err
    assert took < BOUND_S, f"exited {took:.1f} s after the kill"
    assert after < 30, f"exited {after:.1f} s after the last instance ended"
    assert "Traceback" not in err, err
    assert "Prefect's API failed during this run" in err
    assert "completed" in out  # the outcome table was printed
    assert statuses(workdir / "stepline.db") == {"completed": 8}  # none paused for Prefect's sake


def test_a_single_run_whose_prefect_server_dies_completes(
    home: Home, workdir: Path, openai_server: OpenAIServer
) -> None:
    worker = home.popen("run", "contract-review", "--input", str(SAMPLES[0]), cwd=workdir)
    openai_server.wait_for_requests(2, timeout=180)
    kill_server(home)
    killed = time.monotonic()

    out, err = worker.communicate(timeout=300)
    took = time.monotonic() - killed
    after = seconds_since_last_end(workdir / "stepline.db")
    print(f"single run, Prefect killed: exit {took:.1f} s after the kill, {after:.1f} s after its end")

    assert worker.returncode == EXIT_PREFECT_LOST, err
    assert took < BOUND_S, f"exited {took:.1f} s after the kill"
    assert after < 30, f"exited {after:.1f} s after the instance ended"
    assert json.loads(out)["title"]  # the typed output, printed as on any completed run
    assert "Prefect's API failed during this run" in err
    assert statuses(workdir / "stepline.db") == {"completed": 1}
    replayed = home.stepline("server", "start")  # and a later command starts a new server
    assert replayed.returncode == 0, replayed.stderr


def test_ctrl_c_while_waiting_for_a_dead_prefect_ends_within_two_seconds(
    home: Home, workdir: Path, openai_server: OpenAIServer
) -> None:
    worker = home.popen("run", "contract-review", "--input", "inbox", "-c", "8", cwd=workdir)
    openai_server.wait_for_requests(2, timeout=180)
    kill_server(home)
    deadline = time.monotonic() + 120
    while statuses(workdir / "stepline.db").get("completed", 0) < 8:  # all done: now waiting on Prefect
        assert time.monotonic() < deadline, statuses(workdir / "stepline.db")
        time.sleep(0.2)
    time.sleep(1.0)

    interrupted = time.monotonic()
    worker.send_signal(signal.SIGINT)
    try:
        _, err = worker.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise
    took = time.monotonic() - interrupted
    print(f"Ctrl-C while waiting for a dead Prefect: exit {took:.2f} s after it")

    assert took < 2.0, f"{took:.1f} s after Ctrl-C"
    assert worker.returncode in (EXIT_PREFECT_LOST, 130), err
    no_traceback(subprocess.CompletedProcess([], worker.returncode, "", err))
    assert statuses(workdir / "stepline.db") == {"completed": 8}
