"""Batches and schedules from the command line: progress, summary, Ctrl-C, and bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import ROOT, Cli, no_traceback
from tests.databases import sqlite_rows
from tests.servers import OpenAIServer, Reply, slow

CONTRACTS = sorted((ROOT / "samples" / "contracts").glob("*.json"))


def contracts_folder(cli: Cli, copies: int = 1) -> Path:
    folder = cli.folder / "contracts"
    folder.mkdir()
    for n in range(copies):
        for path in CONTRACTS:
            contract = json.loads(path.read_text())
            contract["title"] += f" ({n})"  # distinct inputs: equal bytes count as one for --new-only
            (folder / f"{n}-{path.name}").write_text(json.dumps(contract))
    return folder


def summary(stdout: str) -> dict[str, int]:
    """The outcome table a batch prints: {outcome: count}."""
    return {m[1]: int(m[2]) for m in re.finditer(r"│ (\w+)\s*│\s*(\d+) │", stdout)}


def rows(cli: Cli, query: str) -> list[tuple[object, ...]]:
    return sqlite_rows(cli.database, query)


def test_a_folder_runs_as_a_batch_with_a_summary_and_the_bad_files_named(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    folder = contracts_folder(cli)
    (folder / "notes.txt").write_text("remember to call legal")
    (folder / "scan.json").write_text(json.dumps({"title": "scan", "text": "x" * 1_100_000}))

    result = cli("run", "contract-review", "--input", str(folder), "--concurrency", "2")

    assert result.returncode == 1, result.stderr  # two inputs need attention
    no_traceback(result)
    assert "5/5" in result.stderr  # the progress bar, finished
    assert "completed 3" in result.stderr
    assert summary(result.stdout) == {"completed": 3, "rejected": 2}
    assert "notes.txt" in result.stdout
    assert "is not valid JSON" in result.stdout
    assert "scan.json" in result.stdout
    assert "at most 1 MiB" in result.stdout
    assert "stepline instances" in result.stdout  # where to look next
    assert "stepline tui" in result.stdout
    assert rows(cli, "select status, count(*) from workflow_instance group by status") == [("completed", 3)]
    sources = {Path(str(s)).name for (s,) in rows(cli, "select source from workflow_instance")}
    assert sources == {f"0-{path.name}" for path in CONTRACTS}

    calls = len(openai_server.requests)
    again = cli("run", "contract-review", "--input", str(folder), "--new-only")
    assert summary(again.stdout) == {"skipped": 3, "rejected": 2}
    assert len(openai_server.requests) == calls  # nothing ran twice
    assert cli.instance_count() == 3


def test_a_jsonl_file_is_a_batch_and_a_clean_one_exits_0(cli: Cli) -> None:
    batch = cli.folder / "batch.jsonl"
    batch.write_text("".join(path.read_text().replace("\n", " ") + "\n" for path in CONTRACTS))
    result = cli("run", "contract-review", "--input", str(batch))
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == {"completed": len(CONTRACTS)}
    assert "needs attention" not in result.stdout
    lines = sorted(str(s) for (s,) in rows(cli, "select source from workflow_instance"))
    assert lines == [f"{batch}:{n}" for n in range(1, len(CONTRACTS) + 1)]


@pytest.mark.parametrize(
    ("workflow", "make", "message"),
    [
        ("contract-reveiw", lambda f: (f / "a.json").write_text("{}"), "did you mean 'contract-review'"),
        ("contract-review", lambda f: None, "holds no inputs"),
    ],
)
def test_bad_batch_input_exits_2_and_writes_nothing(
    cli: Cli, workflow: str, make: object, message: str
) -> None:
    folder = cli.folder / "in"
    folder.mkdir()
    assert callable(make)
    make(folder)
    result = cli("run", workflow, "--input", str(folder))
    assert result.returncode == 2
    no_traceback(result)
    assert message in result.stderr
    assert cli.instance_count() == 0


def slowly(server: OpenAIServer, seconds: float) -> Callable[[dict[str, Any]], Reply]:
    """Answer every request with a minimal valid output, after ``seconds``."""
    return lambda body: slow(seconds, server.auto_reply(body))


def start_batch(cli: Cli, folder: Path) -> subprocess.Popen[str]:
    """The batch in its own process group, so a signal reaches it as a terminal's Ctrl-C would."""
    return subprocess.Popen(
        [sys.executable, "-m", "stepline", "run", "contract-review", "--input", str(folder), "-c", "2"],
        cwd=cli.folder,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_ctrl_c_starts_nothing_new_and_leaves_every_started_instance_resumable(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    folder = contracts_folder(cli, copies=2)
    openai_server.default = slowly(openai_server, 0.5)
    batch = start_batch(cli, folder)
    openai_server.wait_for_requests(1, timeout=120)
    os.killpg(batch.pid, signal.SIGINT)
    stdout, stderr = batch.communicate(timeout=120)

    assert batch.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopping: no new input starts" in stderr
    assert "not_started" in stdout
    assert "--new-only" in stdout  # how to pick up the rest
    statuses = rows(cli, "select status, failure_class from workflow_instance")
    assert 1 <= len(statuses) <= 2  # only what had started
    assert all(s in {("completed", None), ("paused", "interrupted")} for s in statuses), statuses

    openai_server.default = None
    for (instance_id,) in rows(cli, "select id from workflow_instance where status = 'paused'"):
        resumed = cli("replay", str(instance_id))
        assert resumed.returncode == 0, resumed.stderr
    rest = cli("run", "contract-review", "--input", str(folder), "--new-only")
    assert rest.returncode == 0, rest.stderr
    assert rows(cli, "select status, count(*) from workflow_instance group by status") == [
        ("completed", 2 * len(CONTRACTS))
    ]


def test_a_second_ctrl_c_stops_at_once_and_pauses_what_was_running(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    folder = contracts_folder(cli, copies=2)
    openai_server.default = slowly(openai_server, 4.0)  # under the 5 s client timeout
    batch = start_batch(cli, folder)
    openai_server.wait_for_requests(2, timeout=120)
    os.killpg(batch.pid, signal.SIGINT)
    time.sleep(0.5)  # two signals sent back to back would reach Python as one
    os.killpg(batch.pid, signal.SIGINT)
    _, stderr = batch.communicate(timeout=60)

    assert batch.returncode == 130, stderr
    assert "stopped at once" in stderr
    assert "Traceback" not in stderr
    statuses = rows(cli, "select status, failure_class from workflow_instance")
    assert statuses == [("paused", "interrupted"), ("paused", "interrupted")]
    assert rows(cli, "select count(*) from step_run where status = 'running'") == [(0,)]


def test_serve_and_validate_refuse_bad_schedules_with_the_key_and_the_fix(cli: Cli) -> None:
    catalog = cli.folder / "stepline.toml"
    base = catalog.read_text()

    no_schedules = cli("serve")
    assert no_schedules.returncode == 2
    assert "no schedules are configured" in no_schedules.stderr

    catalog.write_text(base + '\n[schedules.nightly]\nworkflow = "contract-review"\ncron = "0 25 * * *"\n')
    catalog.write_text(catalog.read_text() + 'input_dir = "inbox"\n')
    for command in ("validate", "serve"):
        refused = cli(command)
        assert refused.returncode == 2, refused.stderr
        no_traceback(refused)
        assert "schedules.nightly: Prefect rejects this schedule" in refused.stderr
        assert "Invalid cron string" in refused.stderr

    catalog.write_text(base + '\n[schedules.nightly]\nworkflow = "contract-review"\ncron = "0 2 * * *"\n')
    catalog.write_text(catalog.read_text() + 'input_dir = "inbox"\n')
    listed = cli("schedules")
    assert "nightly" in listed.stdout
    assert "cron 0 2 * * *" in listed.stdout
    without_server = {k: v for k, v in cli.env.items() if k != "PREFECT_API_URL"}
    without_server["PREFECT_HOME"] = str(cli.folder / "prefect-home")
    alone = subprocess.run(
        [sys.executable, "-m", "stepline", "serve"],
        cwd=cli.folder,
        env=without_server,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert alone.returncode == 2
    assert "needs a running Prefect server" in alone.stderr
    assert "prefect server start --background" in alone.stderr
