"""`stepline` as a user runs it: a subprocess, real files, real exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.conftest import SAMPLE, Cli, no_traceback
from tests.servers import OpenAIServer, error, invalid_json


def test_run_prints_the_typed_result_and_show_lists_every_attempt(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    result = cli("run", "contract-review", "--input", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    review = json.loads(result.stdout)
    assert review["title"] == json.loads(SAMPLE.read_text())["title"]
    assert {"clauses", "summary"} <= review.keys()
    calls = len(openai_server.requests)
    assert calls == 2 + len(review["clauses"])  # extract, one assessment per clause, summary
    models = [r.body["model"] for r in openai_server.requests]
    assert models[0] == "gpt-small"
    assert set(models[1:-1]) == {"gpt-big"}

    listed = cli("instances", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["status"] == "completed"
    assert row["workflow"] == "contract-review"

    shown = cli("show", row["id"][:8], "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert len(record["attempts"]) == calls
    assert {a["model_id"] for a in record["attempts"]} == {"small", "big"}
    assert all(a["prompt_version_id"] for a in record["attempts"])
    assert record["instance"]["flow_run_id"]

    table = cli("show", row["id"])
    assert table.returncode == 0
    assert "extract-clauses" in table.stdout


def test_failed_run_names_instance_step_and_class(cli: Cli, openai_server: OpenAIServer) -> None:
    openai_server.enqueue(error(401))  # auth failures are never retried
    result = cli("run", "contract-review", "--input", "-", stdin=SAMPLE.read_text())
    assert result.returncode == 1
    no_traceback(result)
    assert "paused at step 'extract-clauses': auth" in result.stderr
    failed = cli("instances", "--status", "paused", "--json")
    (row,) = [json.loads(line) for line in failed.stdout.splitlines()]
    assert row["id"] in result.stderr
    assert row["failure_class"] == "auth"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["run", "contract-review", "--input", "-"], '{"title": "x", ', "standard input is not valid JSON"),
        (["run", "contract-review", "--input", "-"], '{"title": "x"}', "text: Field required"),
        (
            ["run", "contract-review", "--input", "missing.json"],
            None,
            "input file missing.json does not exist",
        ),
        (["run", "contract-reveiw", "--input", "-"], '{"title": "x"}', "did you mean 'contract-review'"),
        (["instances", "--status", "lost"], None, "unknown status 'lost'"),
        (["show", "0000"], None, "no instance with id '0000'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(
    cli: Cli, args: list[str], stdin: str | None, message: str
) -> None:
    result = cli(*args, stdin=stdin)
    assert result.returncode == 2, result.stderr
    no_traceback(result)
    assert message in result.stderr
    assert cli.instance_count() == 0


def test_malformed_config_names_the_file(cli: Cli) -> None:
    (cli.folder / "stepline.toml").write_text("[providers.cloud]\nkind = 'openai'\nbase_url = \n")
    result = cli("run", "contract-review", "--input", str(SAMPLE))
    assert result.returncode == 2
    no_traceback(result)
    assert "stepline.toml: not valid TOML" in result.stderr


def test_unreachable_database_is_named(cli: Cli) -> None:
    cli.env["STEPLINE_DATABASE_URL"] = "postgresql+psycopg://nobody:pw@127.0.0.1:1/nowhere"
    for args in (["run", "contract-review", "--input", str(SAMPLE)], ["instances"]):
        result = cli(*args)
        assert result.returncode == 2
        no_traceback(result)
        assert "cannot reach database postgresql+psycopg://nobody:***@127.0.0.1:1/nowhere" in result.stderr
        assert "pw@" not in result.stderr


def test_review_approve_resumes_and_a_bad_correction_is_refused(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    openai_server.enqueue(invalid_json("{clauses"), invalid_json("{clauses"), invalid_json("{clauses"))
    stopped = cli("run", "contract-review", "--input", str(SAMPLE))
    assert stopped.returncode == 1
    assert "needs_review at step 'extract-clauses': schema_invalid" in stopped.stderr

    listed = cli("review", "list", "--json")
    (item,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert item["raw_output"] == "{clauses"
    assert item["status"] == "open"
    shown = cli("review", "show", item["id"][:10])
    assert "{clauses" in shown.stdout
    assert "expected schema:" in shown.stdout

    bad = cli.folder / "bad.json"
    bad.write_text('{"clauses": []}')
    refused = cli("review", "approve", item["id"], "--output", str(bad))
    assert refused.returncode == 2
    no_traceback(refused)
    assert "clauses: List should have at least 1 item" in refused.stderr

    good = cli.folder / "good.json"
    good.write_text('{"clauses": [{"clause_id": "c1", "heading": "Term", "text": "Runs for 12 months."}]}')
    approved = cli("review", "approve", item["id"], "--output", str(good), "--note", "fixed by hand")
    assert approved.returncode == 0, approved.stderr
    review = json.loads(approved.stdout)
    assert [c["clause_id"] for c in review["clauses"]] == ["c1"]
    again = cli("review", "approve", item["id"], "--output", str(good))
    assert again.returncode == 2
    assert "already approved" in again.stderr


def test_replay_resumes_a_paused_instance_and_costs_add_up(cli: Cli, openai_server: OpenAIServer) -> None:
    openai_server.enqueue(error(401))
    stopped = cli("run", "contract-review", "--input", str(SAMPLE))
    assert stopped.returncode == 1
    instance = json.loads(cli("instances", "--json").stdout.splitlines()[0])["id"]

    resumed = cli("replay", instance[:12])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["title"]

    refused = cli("replay", instance)
    assert refused.returncode == 2
    assert "is completed; name a step with --from" in refused.stderr
    typo = cli("replay", instance, "--from", "sumarize-review")
    assert typo.returncode == 2
    assert "did you mean 'summarize-review'" in typo.stderr

    costs = [json.loads(line) for line in cli("costs", "--json").stdout.splitlines()]
    assert {row["step"] for row in costs} == {"extract-clauses", "assess-risk", "summarize-review"}
    assert all(row["cost_usd"] > 0 for row in costs)
    table = cli("costs")
    assert "total" in table.stdout


def test_workflows_and_validate_check_routing_without_calling_a_model(
    cli: Cli, openai_server: OpenAIServer
) -> None:
    rows = [json.loads(line) for line in cli("workflows", "--json").stdout.splitlines()]
    routes = {row["step"]: row["model"] for row in rows if row["workflow"] == "contract-review"}
    assert routes == {"extract-clauses": "small", "assess-risk": "big", "summarize-review": "small"}
    # The catalog has no private model, so the pii step of customer-intake cannot run.
    public_only = cli("validate")
    assert public_only.returncode == 2
    assert "customer-intake / extract-contact: no catalog model can serve step" in public_only.stderr
    assert "needs a private provider" in public_only.stderr

    catalog = cli.folder / "stepline.toml"
    catalog.write_text(
        catalog.read_text()
        + '\n[providers.vpc]\nkind = "openai_compatible"\n'
        + 'base_url = "http://127.0.0.1:9/v1"\nprivate = true\n'
        + '[models.private]\nprovider = "vpc"\nmodel = "qwen"\ntier = "cheap"\ninput_price = 5.0\n'
    )
    ok_run = cli("validate")
    assert ok_run.returncode == 0, ok_run.stderr
    assert "ok: 2 providers, 3 models, 2 workflows, 6 steps routable" in ok_run.stderr
    # Where each step of a workflow holding personal data may go, and why, before any request.
    assert "privacy: customer-intake holds personal data (personal input fields: message)." in ok_run.stderr
    assert (
        "privacy:   triage-request: private models only: its prompt renders $message "
        "(personal: marked Personal)" in ok_run.stderr
    )
    assert "privacy:   draft-reply: any model: it renders $customer (declassified" in ok_run.stderr
    assert "privacy: contract-review" not in ok_run.stderr  # it holds no personal data
    steps = {row["step"]: row for row in map(json.loads, cli("workflows", "--json").stdout.splitlines())}
    triage, draft = steps["triage-request"], steps["draft-reply"]
    assert (triage["model"], triage["privacy"]["private_only"]) == ("private", True)
    assert (draft["model"], draft["privacy"]["private_only"]) == ("small", False)
    assert draft["privacy"]["declassifiers"] == ["contact-placeholders"]
    assert draft["privacy"]["rendered"]["customer"]["carries"] == "declassified"
    table = cli("workflows").stdout
    assert "declassifier contact-placeholders:" in table
    assert "triage-request: private models only" in table

    (cli.folder / "stepline.toml").write_text(
        '[providers.cloud]\nkind = "openai"\napi_key_env = "UNSET_KEY_X"\n'
    )
    cli.env.pop("UNSET_KEY_X", None)
    broken = cli("validate")
    assert broken.returncode == 2
    no_traceback(broken)
    assert "contract-review / extract-clauses: no catalog model can serve step" in broken.stderr
    assert openai_server.requests == []


def test_the_api_key_appears_in_no_output_log_or_database_file(cli: Cli, openai_server: OpenAIServer) -> None:
    """Scanned after runs that used the key: verbose logs, show/JSON output, the SQLite files."""
    key = cli.env["STEPLINE_TEST_OPENAI_KEY"]
    openai_server.enqueue(error(429, retry_after=0.01), invalid_json("{"), error(401))
    outputs = [
        cli("run", "contract-review", "--input", str(SAMPLE), "-v"),  # 429, re-ask, then auth pause
        cli("run", "contract-review", "--input", str(SAMPLE)),
    ]
    (paused,) = [
        json.loads(line) for line in cli("instances", "--status", "paused", "--json").stdout.splitlines()
    ]
    outputs += [
        cli("replay", paused["id"][:12], "-v"),
        cli("show", paused["id"][:12], "--json"),
        cli("instances", "--json"),
        cli("costs"),
    ]

    assert any(key in r.headers.get("authorization", "") for r in openai_server.requests)  # it was used
    for result in outputs:
        assert key not in result.stdout
        assert key not in result.stderr
    stored = b"".join(p.read_bytes() for p in cli.folder.glob("stepline.db*"))
    assert len(stored) > 10_000
    assert key.encode() not in stored
    assert (cli.database.stat().st_mode & 0o777) == 0o600


SITE = """
import atexit, gc, sys
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(1))
atexit.register(lambda: print("gc:", gc.isenabled(), gc.get_freeze_count(), len(full), file=sys.stderr))
"""


def test_a_run_starts_with_the_collector_off_then_freezes_its_start(cli: Cli, tmp_path: Path) -> None:
    """stepline/launch.py: a start walks no full collection over its own heap; the collector is
    on again (the start's objects frozen) by the time the run's step goes out and at exit."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE, encoding="utf-8")
    cli.env["PYTHONPATH"] = os.pathsep.join([str(site), cli.env["PYTHONPATH"]])
    result = cli("run", "contract-review", "--input", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("gc:")]
    enabled, frozen, full = line.split()[1:]
    assert enabled == "True"
    assert int(frozen) > 100_000  # Prefect, the store, the SDK: the start's long-lived objects
    assert int(full) <= 3, line


def test_a_database_under_a_second_hard_link_is_refused_with_its_cause(cli: Cli) -> None:
    """Issue 28: it said "disk I/O error; check that the server is running"."""
    assert cli("instances").returncode == 0  # creates stepline.db
    os.link(cli.database, cli.folder / "linked.db")
    for name in ("linked.db", "stepline.db"):
        cli.env["STEPLINE_DATABASE_URL"] = f"sqlite:///{cli.folder / name}"
        for args in (["instances"], ["run", "contract-review", "--input", str(SAMPLE)]):
            result = cli(*args)
            assert result.returncode == 2, result.stderr
            no_traceback(result)
            assert f"database file {cli.folder / name} has 2 hard links" in result.stderr
            assert "server is running" not in result.stderr
    assert f"also named linked.db in {cli.folder}" in result.stderr  # the last one named the other


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_answer_with_nul_goes_to_review_and_is_shown_as_received(
    cli: Cli, openai_server: OpenAIServer, kind: str
) -> None:
    """Issue 28: on PostgreSQL a NUL in an answer paused the instance as `storage`, answer lost."""
    from tests.databases import database_url

    answer = "{clauses \x00 \\u0000 \\ud800"
    openai_server.default = invalid_json(answer)
    with database_url(kind, cli.folder) as url:
        cli.env["STEPLINE_DATABASE_URL"] = url
        stopped = cli("run", "contract-review", "--input", str(SAMPLE))
        assert stopped.returncode == 1, stopped.stderr
        assert "needs_review at step 'extract-clauses': schema_invalid" in stopped.stderr

        listed = cli("review", "list", "--json")
        (item,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert item["raw_output"] == answer
