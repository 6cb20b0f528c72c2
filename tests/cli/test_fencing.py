"""A worker frozen past its lease is fenced off: once it wakes it sends and overwrites nothing.

The worker is a real `stepline run`, frozen with SIGSTOP while its request
for the second clause is on the wire. `stepline recover --replay`, in another
process, judges it lost and finishes the instance in generation 1. Then the
frozen request gets its answer (a valid one, or a 400) and the worker is
woken with SIGCONT. Everything is checked from outside: the provider's
request log and the database, read by another process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import SAMPLE, Cli, no_traceback
from tests.databases import sqlite_rows
from tests.servers import OpenAIServer, Reply, error, ok

CLAUSES = [
    {"clause_id": f"c{n}", "heading": f"Clause {n}", "text": f"The wording of clause {n}."} for n in (1, 2, 3)
]
LEASE = "\n[workers]\nheartbeat_s = 1\nlease_s = 3\n"


def request_key(body: dict[str, Any]) -> str:
    """Which (step, clause) a request is for, read off the wire."""
    tool = str(body["tools"][0]["function"]["name"])
    if tool != "RiskAssessment":
        return tool
    text = json.dumps(body["messages"])
    (clause,) = [c["clause_id"] for c in CLAUSES if f"Clause {c['clause_id']} " in text]
    return f"RiskAssessment:{clause}"


class FrozenSecondClause:
    """Valid answers, except that the first request for clause c2 waits for ``release``."""

    def __init__(self, late: Reply) -> None:
        self.late = late
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._first_c2 = True

    def __call__(self, body: dict[str, Any]) -> Reply:
        key = request_key(body)
        if key == "ExtractedClauses":
            return ok({"clauses": CLAUSES})
        if key == "ReviewSummary":
            return ok({"summary": "From the replay.", "risk_level": "low", "flagged_clauses": []})
        with self._lock:
            hold = key == "RiskAssessment:c2" and self._first_c2
            if hold:
                self._first_c2 = False
        if hold:
            self.held.set()
            self.release.wait(timeout=120)
            return self.late
        return ok({"risk_level": "low", "reason": "From the replay."})


def freeze_between_writes(pid: int, database: Path) -> None:
    """SIGSTOP the worker once its only open business is the held request, and not mid-commit.

    The other clauses' answers arrive as c2 is held; a process frozen inside a commit keeps
    SQLite's write lock, and every other writer waits its busy timeout for it (that is SQLite,
    not fencing). So wait for them to be recorded, freeze, and thaw and retry if the file is
    still locked by the frozen process.
    """
    deadline = time.monotonic() + 60
    while sqlite_rows(database, "select count(*) from attempt where finished_at is null") != [(1,)]:
        assert time.monotonic() < deadline, "the other clauses' answers were never recorded"
        time.sleep(0.05)
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        with closing(sqlite3.connect(database, timeout=0.05, isolation_level=None)) as probe:
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                pass  # frozen holding the write lock: let it finish that write
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("the worker never paused between writes")


@pytest.mark.parametrize(
    "late",
    [
        pytest.param(
            ok({"risk_level": "high", "reason": "STALE: answered after the worker froze."}), id="late-answer"
        ),
        pytest.param(error(400, message="STALE: the frozen worker's request was refused"), id="late-400"),
    ],
)
def test_a_worker_frozen_past_its_lease_sends_and_overwrites_nothing_when_it_wakes(
    cli: Cli, openai_server: OpenAIServer, late: Reply
) -> None:
    catalog = cli.folder / "stepline.toml"
    catalog.write_text(catalog.read_text().replace("timeout_s = 5.0", "timeout_s = 60.0") + LEASE)
    script = FrozenSecondClause(late)
    openai_server.default = script
    worker = subprocess.Popen(
        [sys.executable, "-m", "stepline", "run", "contract-review", "--input", str(SAMPLE)],
        cwd=cli.folder,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert script.held.wait(timeout=120), "the worker never asked about clause c2"
        freeze_between_writes(worker.pid, cli.database)  # frozen with its request on the wire
        time.sleep(4.5)  # past lease_s = 3

        recovered = cli("recover", "--replay", "--json")

        assert recovered.returncode == 0, recovered.stderr
        no_traceback(recovered)
        replayed = [json.loads(line) for line in recovered.stdout.splitlines()]
        assert [r.get("replayed") for r in replayed if "replayed" in r] == ["completed"]
        before_wake = len(openai_server.requests)
        (final_before,) = sqlite_rows(
            cli.database, "select status, output, generation, fence from workflow_instance"
        )
    finally:
        script.release.set()  # the frozen request is answered now, into the stopped worker's socket
        os.kill(worker.pid, signal.SIGCONT)
        _, stderr = worker.communicate(timeout=120)

    # The woken worker stopped: no new request, an honest message, no traceback.
    assert worker.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "was taken over" in stderr, stderr
    time.sleep(2)  # anything it might still send would arrive now
    keys = [request_key(r.body) for r in openai_server.requests]
    # The server logs a request once its answer is chosen: the frozen one comes last, nothing after.
    assert len(keys) == before_wake + 1
    assert keys[-1] == "RiskAssessment:c2"
    # No completed step reached the provider twice: only the request in flight was asked again.
    assert sorted(keys) == sorted(
        [
            "ExtractedClauses",
            "RiskAssessment:c1",
            "RiskAssessment:c2",
            "RiskAssessment:c2",
            "RiskAssessment:c3",
            "ReviewSummary",
        ]
    )

    # The outcome is the replay's, untouched by the stale worker.
    (final,) = sqlite_rows(cli.database, "select status, output, generation, fence from workflow_instance")
    assert final == final_before
    status, output, generation, _fence = final
    assert (status, generation) == ("completed", 1)
    review = json.loads(output)
    assert [c["risk_level"] for c in review["clauses"]] == ["low", "low", "low"]
    assert "STALE" not in output

    # The recovery's marks stay; one completed run per (step, index); the late answer is audit only.
    runs = sqlite_rows(
        cli.database,
        'select step, "index", generation, status, failure_class from step_run order by started_at',
    )
    assert ("assess-risk", 1, 0, "failed", "worker_lost") in runs
    completed = [(step, index) for step, index, _g, run_status, _f in runs if run_status == "completed"]
    assert sorted(completed) == sorted(
        [
            ("extract-clauses", 0),
            ("assess-risk", 0),
            ("assess-risk", 1),
            ("assess-risk", 2),
            ("summarize-review", 0),
        ]
    )
    attempts = sqlite_rows(
        cli.database,
        "select a.step, r.generation, a.failure_class, a.raw_output, a.raw_response, a.finished_at "
        "from attempt a join step_run r on r.id = a.step_run_id order by a.started_at",
    )
    assert len(attempts) == len(keys)  # one row per request the provider saw
    assert all(a[5] is not None for a in attempts)  # none left in flight
    (stale,) = [a for a in attempts if a[2] not in (None,)]
    assert stale[:3] == ("assess-risk", 0, "superseded")
    assert "STALE" in (stale[3] or "") + (stale[4] or "")  # the late answer, kept byte for byte
    assert all("STALE" not in (a[3] or "") for a in attempts if a[2] is None)
