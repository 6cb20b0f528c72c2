"""A worker killed with SIGKILL mid-instance loses nothing and redoes no finished step.

The worker is the real `stepline run` process. It is killed while its fourth
model request (the third clause's risk assessment) is on the wire, then the
instance is resumed by `stepline replay` (or `stepline recover --replay`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from tests.cli.conftest import SAMPLE, Cli, no_traceback
from tests.databases import sqlite_rows
from tests.servers import OpenAIServer, Reply, ok, slow

CLAUSES = [
    {"clause_id": f"c{n}", "heading": f"Clause {n}", "text": f"The wording of clause {n}."} for n in (1, 2, 3)
]


def tool(body: dict[str, Any]) -> str:
    return str(body["tools"][0]["function"]["name"])


def contract_answers(hang_on_assessment: int | None) -> Callable[[dict[str, Any]], Reply]:
    """Valid answers for contract-review's three steps; the n-th risk assessment hangs."""
    lock = threading.Lock()
    assessments = 0

    def reply(body: dict[str, Any]) -> Reply:
        nonlocal assessments
        name = tool(body)
        if name == "ExtractedClauses":
            return ok({"clauses": CLAUSES})
        if name == "RiskAssessment":
            with lock:
                assessments += 1
                n = assessments
            answer = ok({"risk_level": "low", "reason": "A standard clause."})
            return slow(4.0, answer) if n == hang_on_assessment else answer
        return ok({"summary": "Three standard clauses.", "risk_level": "low", "flagged_clauses": []})

    return reply


def rows(cli: Cli, query: str) -> list[tuple[Any, ...]]:
    return sqlite_rows(cli.database, query)


def start_worker(cli: Cli) -> subprocess.Popen[bytes]:
    """`stepline run` on the sample contract, in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "stepline", "run", "contract-review", "--input", str(SAMPLE)],
        cwd=cli.folder,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_mid_instance(cli: Cli, openai_server: OpenAIServer) -> str:
    """Start `stepline run`, SIGKILL it while request 4 is in flight; the instance id."""
    openai_server.default = contract_answers(hang_on_assessment=3)
    worker = start_worker(cli)
    try:
        openai_server.wait_for_requests(4, timeout=120)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    ((instance_id, status, recorded_worker),) = rows(cli, "select id, status, worker from workflow_instance")
    assert status == "running"  # what a crash leaves behind
    assert f":{worker.pid}:" in recorded_worker
    # The request on the wire when the worker died was recorded before it was sent.
    in_flight = rows(cli, "select step from attempt where finished_at is null")
    assert in_flight == [("assess-risk",)]
    return str(instance_id)


def check_resumed_without_loss(cli: Cli, openai_server: OpenAIServer, instance_id: str) -> None:
    requests = [tool(r.body) for r in openai_server.requests]
    # Before the kill: the extraction and three assessments (the third one hung).
    # After: only the interrupted assessment again, then the summary.
    assert requests == ["ExtractedClauses", *["RiskAssessment"] * 4, "ReviewSummary"]
    assert rows(cli, "select status, failure_class from workflow_instance") == [("completed", None)]
    attempts = rows(
        cli, "select step_run_id, attempt_number, failure_class, finished_at from attempt order by started_at"
    )
    assert len(attempts) == len(requests)  # one row per request the provider saw: none missing
    assert len({(a[0], a[1]) for a in attempts}) == len(attempts)  # none duplicated
    assert all(a[3] is not None for a in attempts)  # none left in flight
    assert [a[2] for a in attempts] == [None, None, None, "worker_lost", None, None]
    runs = rows(
        cli, 'select step, "index", generation, status, failure_class from step_run order by started_at'
    )
    assert runs == [
        ("extract-clauses", 0, 0, "completed", None),
        ("assess-risk", 0, 0, "completed", None),
        ("assess-risk", 1, 0, "completed", None),
        ("assess-risk", 2, 0, "failed", "worker_lost"),
        ("assess-risk", 2, 1, "completed", None),
        ("summarize-review", 0, 1, "completed", None),
    ]


def test_sigkill_mid_instance_then_replay_resumes_at_the_interrupted_step(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    instance_id = kill_mid_instance(cli, openai_server)
    openai_server.default = contract_answers(hang_on_assessment=None)

    # Its process is gone from this host, so the replay recovers it at once.
    result = cli("replay", instance_id[:12])

    assert result.returncode == 0, result.stderr
    no_traceback(result)
    check_resumed_without_loss(cli, openai_server, instance_id)


def test_stepline_recover_pauses_lost_instances_and_replays_them(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    instance_id = kill_mid_instance(cli, openai_server)
    openai_server.default = contract_answers(hang_on_assessment=None)

    listed = cli("recover", "--json")
    assert listed.returncode == 0, listed.stderr
    (found,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert found["instance"] == instance_id
    assert "no longer exists on this host" in found["reason"]
    assert rows(cli, "select status, failure_class, failed_step from workflow_instance") == [
        ("paused", "worker_lost", "assess-risk")
    ]
    assert "no lost instances" in cli("recover").stderr  # recovered once only

    # Nothing newly lost, but what was paused as worker_lost (here, or by a worker's flow
    # run) is replayed: the one command an operator needs after a crash.
    replayed = cli("recover", "--replay")
    assert replayed.returncode == 0, replayed.stderr
    assert "no lost instances" in replayed.stderr
    assert f"instance {instance_id} completed" in replayed.stderr
    no_traceback(replayed)
    # Read by another process, after the command's own: `recover --replay` opens its store and a
    # runtime, and when each opened the file itself, closing it dropped the process's SQLite locks;
    # this test's reader then checkpointed and deleted -wal under it and the replay's commits were
    # lost (the row stayed running/worker_lost). One engine per database per process fixed it.
    state = rows(cli, "select status, failure_class, generation, worker, updated_at from workflow_instance")
    assert state[0][:2] == ("completed", None), (state, replayed.stderr, rows(cli, "select * from step_run"))
    check_resumed_without_loss(cli, openai_server, instance_id)
    again = cli("recover", "--replay")  # nothing left to replay
    assert again.returncode == 0, again.stderr
    assert "completed" not in again.stderr


def test_recover_leaves_a_live_workers_instance_alone(cli: Cli, openai_server: OpenAIServer) -> None:
    openai_server.default = contract_answers(hang_on_assessment=1)
    worker = start_worker(cli)
    try:
        openai_server.wait_for_requests(2, timeout=120)
        assert "no lost instances" in cli("recover").stderr
    finally:
        worker.wait(timeout=120)
    assert worker.returncode == 0
    assert rows(cli, "select status from workflow_instance") == [("completed",)]
