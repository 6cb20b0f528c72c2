"""`stepline consistency`: the seed's 80/20 example measured through the real SDK over HTTP.

The loopback server answers as the seed describes a classification step at the wrong
temperature: at temperature 0 always "medium"; at any other temperature "medium" four times
in five and "high" the fifth (every 5th request at that temperature, so the split is exact).
Every command runs the real `stepline` in a subprocess; the probe needs no Prefect. The
history test runs real workflow instances in-process first.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import ROOT, SAMPLE, Cli, no_traceback
from tests.servers import OpenAIServer, Reply, ok

CLAUSE = ROOT / "tests" / "data" / "clause.json"
MODULES = '["tests.cli.risk_workflow"]'
REASONS = {"medium": "Mutual terms, capped liability.", "high": "Liability is uncapped."}


def seed_replies(server: OpenAIServer) -> None:
    """Temperature 0: always medium. Any other: every 5th request at that temperature high."""
    seen: Counter[float] = Counter()
    lock = threading.Lock()

    def reply(body: dict[str, Any]) -> Reply:
        temperature = float(body.get("temperature", 1.0))
        with lock:
            seen[temperature] += 1
            count = seen[temperature]
        risk = "high" if temperature > 0 and count % 5 == 0 else "medium"
        return ok({"risk_level": risk, "reason": REASONS[risk]})

    server.default = reply


def catalog(base_url: str) -> str:
    return f"""
[providers.cloud]
kind = "openai"
base_url = "{base_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 5.0

[models.risk-model]
provider = "cloud"
model = "gpt-risk"
tier = "capable"
structured_mode = "tools"
input_price = 0.1
output_price = 0.4
"""


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        seed_replies(server)
        yield server


@pytest.fixture
def cli(tmp_path: Path, server: OpenAIServer) -> Cli:
    (tmp_path / "stepline.toml").write_text(catalog(server.base_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
    env.update(
        STEPLINE_TEST_OPENAI_KEY="sk-test-cli-0123456789",
        STEPLINE_WORKFLOW_MODULES=MODULES,
        PREFECT_API_URL="http://127.0.0.1:9/api",  # configured, never reached: no server is started
        PYTHONPATH=str(ROOT),
    )
    return Cli(tmp_path, env)


def stored(cli: Cli) -> list[dict[str, Any]]:
    if not cli.database.exists():
        return []
    with closing(sqlite3.connect(cli.database)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("select * from consistency_run order by created_at")]


def test_at_the_seeds_temperature_the_probe_reports_the_80_20_split(cli: Cli, server: OpenAIServer) -> None:
    result = cli(
        "consistency",
        "risk-check",
        "rate-risk",
        "--input",
        str(SAMPLE),
        "-n",
        "10",
        "--temperature",
        "0",
        "--json",
    )

    assert result.returncode == 1, result.stderr  # inconsistent at the step's own 0.7
    report = json.loads(result.stdout)
    at_07, at_0 = report["configured"], report["compared"]
    assert (at_07["temperature"], at_0["temperature"]) == (0.7, 0.0)
    assert at_07["fields"]["risk_level"] == {
        "kind": "choice",
        "agreement": 0.8,
        "distinct": 2,
        "values": [["medium", 8], ["high", 2]],
    }
    assert at_07["verdict"] == "inconsistent"
    assert report["verdict"] == "inconsistent"
    assert at_07["fields"]["reason"]["kind"] == "text"  # counted, not judged
    assert at_07["fields"]["reason"]["distinct"] == 2
    assert at_0["fields"]["risk_level"]["agreement"] == 1.0
    assert at_0["fields"]["risk_level"]["values"] == [["medium", 10]]
    assert at_0["verdict"] == "consistent"
    assert at_07["models"] == {"risk-model": 10}
    assert at_07["temperature_sent"] is True
    # At the wire: ten requests at the step's 0.7, then ten at the 0 asked for.
    sent = [request.body["temperature"] for request in server.requests]
    assert sent == [0.7] * 10 + [0.0] * 10
    # Stored once, with both temperatures; no workflow instance was made.
    (row,) = stored(cli)
    assert (row["workflow"], row["step"], row["samples"], row["threshold"]) == (
        "risk-check",
        "rate-risk",
        10,
        0.9,
    )
    assert (row["temperature"], row["compare_temperature"]) == (0.7, 0.0)
    assert (row["verdict"], row["compare_verdict"]) == ("inconsistent", "consistent")
    assert json.loads(row["agreement"])["risk_level"]["agreement"] == 0.8
    assert row["model_id"] == "risk-model"
    assert row["input_digest"] == report["input_digest"]
    assert cli.instance_count() == 0


def test_the_table_says_the_split_and_the_verdict(cli: Cli) -> None:
    result = cli("consistency", "risk-check", "rate-risk", "--input", str(SAMPLE), "--samples", "5")

    assert result.returncode == 1, result.stderr
    no_traceback(result)
    assert '0.80  "medium" x4, "high" x1' in result.stdout
    assert "t=0.7: inconsistent (risk_level 0.80 < 0.90); answered by risk-model" in result.stdout


def test_a_later_step_takes_its_own_input_at_its_own_temperature(cli: Cli, server: OpenAIServer) -> None:
    wrong = cli("consistency", "contract-review", "assess-risk", "--input", str(SAMPLE), "-n", "4")
    assert wrong.returncode == 2
    assert "does not match assess-risk's input (ClauseToAssess" in wrong.stderr
    assert "`stepline show <id> --json` prints each step run's input" in wrong.stderr

    result = cli("consistency", "contract-review", "assess-risk", "--input", str(CLAUSE), "-n", "4", "--json")

    assert result.returncode == 0, result.stderr  # four at 0.1: the fifth would have been "high"
    assert json.loads(result.stdout)["configured"]["fields"]["risk_level"]["agreement"] == 1.0
    assert [request.body["temperature"] for request in server.requests] == [0.1] * 4


BAD = {
    "unknown-workflow": (("no-such", "rate-risk", "--input", str(SAMPLE)), "unknown workflow 'no-such'"),
    "unknown-step": (
        ("risk-check", "rate", "--input", str(SAMPLE)),
        "has no step 'rate'; its steps: rate-risk",
    ),
    "missing-input": (("risk-check", "rate-risk", "--input", "nowhere.json"), "input file nowhere.json"),
    "no-input": (("risk-check", "rate-risk"), "--input is required"),
    "one-sample": (
        ("risk-check", "rate-risk", "--input", str(SAMPLE), "-n", "1"),
        "--samples must be between 2",
    ),
    "not-a-count": (
        ("risk-check", "rate-risk", "--input", str(SAMPLE), "-n", "ten"),
        "must be a whole number",
    ),
    "hot": (("risk-check", "rate-risk", "--input", str(SAMPLE), "--temperature", "3"), "between 0 and 2"),
    "history-with-input": (
        ("risk-check", "rate-risk", "--from-history", "--input", str(SAMPLE)),
        "takes no --input",
    ),
}


@pytest.mark.parametrize("case", list(BAD.values()), ids=list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_sent_or_stored(
    cli: Cli, server: OpenAIServer, case: tuple[tuple[str, ...], str]
) -> None:
    args, says = case
    result = cli("consistency", *args)

    assert result.returncode == 2, result.stderr
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: ")
    assert says in line
    assert server.requests == []
    assert stored(cli) == []


def test_from_history_lists_inputs_whose_stored_answers_disagree(
    cli: Cli,
    server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
    run_instances: Callable[[list[tuple[dict[str, str], str]]], None],
) -> None:
    nda = json.loads(SAMPLE.read_text())
    other = {"title": "Consulting", "text": "The consultant delivers monthly reports for a fixed fee."}
    once = {"title": "Once", "text": "A contract that was only ever reviewed one single time."}
    run_instances(
        [(nda, "medium"), (nda, "medium"), (nda, "high"), (other, "low"), (other, "low"), (once, "high")]
    )

    result = cli("consistency", "risk-check", "rate-risk", "--from-history", "--json")

    assert result.returncode == 1, result.stderr  # one input disagrees
    report = json.loads(result.stdout)
    assert (report["answers"], report["inputs"], report["repeated"]) == (6, 3, 2)
    (group,) = report["disagreeing"]
    assert group["input"] == nda
    assert group["answers"] == 3
    assert group["models"] == {"risk-model": 3}
    assert group["fields"]["risk_level"]["values"] == [["medium", 2], ["high", 1]]
    assert "reason" not in group["fields"]  # free text differs by nature: not a disagreement
    text = cli("consistency", "risk-check", "rate-risk", "--from-history")
    assert (
        "rate-risk in risk-check: 6 answer(s) over 3 distinct input(s), 2 answered more than once"
        in text.stdout
    )
    assert f"input {group['input_digest'][:16]} (3 answers; risk-model x3)" in text.stdout
    assert '  risk_level: "medium" x2, "high" x1' in text.stdout
    assert stored(cli) == []  # read-only


@pytest.fixture
def run_instances(
    cli: Cli, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Callable[[list[tuple[dict[str, str], str]]], None]:
    """Run risk-check instances in this process, each answered with the risk given."""

    def run(cases: list[tuple[dict[str, str], str]]) -> None:
        from flows.instances import run_workflow
        from flows.runtime import Runtime
        from steps.settings import load_settings
        from tests.cli.risk_workflow import WORKFLOW

        monkeypatch.setenv("STEPLINE_CONFIG", str(cli.folder / "stepline.toml"))
        monkeypatch.setenv("STEPLINE_DATABASE_URL", f"sqlite:///{cli.database}")
        monkeypatch.setenv("STEPLINE_TEST_OPENAI_KEY", "sk-test-cli-0123456789")
        server.enqueue(*(ok({"risk_level": risk, "reason": f"{risk} because"}) for _, risk in cases))
        with Runtime.open(load_settings()) as runtime:
            for payload, _ in cases:
                assert run_workflow(WORKFLOW, payload, runtime).status.value == "completed"

    return run
