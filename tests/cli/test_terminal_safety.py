"""What `stepline` prints of an input or a model's answer is shown by a terminal, never obeyed.

Each command's stdout and stderr go through a VT emulator (pyte), as bytes, the way a
terminal gets them: the window title must stay unset and no character may be coloured.
Rich prints no colour of its own here (not a terminal), so any colour is the payload's.
JSON output must still parse back to the very strings that went in.
"""

from __future__ import annotations

import json
import re
import subprocess

import pyte
import pytest

from stepline.untrusted import for_terminal, json_for_terminal
from tests.cli.conftest import SAMPLE, Cli, no_traceback
from tests.servers import OpenAIServer, error, invalid_json, ok

OSC_TITLE = "\x1b]0;PWNED\x07"  # 7-bit OSC 0: set the window title, ended by BEL
SGR_RED = "\x1b[31m"
C1_CSI_RED_BG = "\x9b41m"  # 8-bit CSI: SGR red background
C1_OSC_TITLE = "\x9d2;PWNED\x9c"  # 8-bit OSC 2, ended by 8-bit ST
BIDI = "\u202eevil\u202c \u2066iso\u2069 \u200f\u061c"
HEADING = f"H{OSC_TITLE}{SGR_RED}{C1_CSI_RED_BG}{C1_OSC_TITLE}\u202eX"  # <= 60 characters
PAYLOAD = f"P{OSC_TITLE}{SGR_RED}red{C1_CSI_RED_BG}bg{C1_OSC_TITLE}{BIDI}\x00\x08\r\x7f 日本語 مرحبا Z"
ARGUMENT = PAYLOAD.replace("\x00", "")  # an input or a command line cannot hold NUL

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def screen_after(data: bytes) -> pyte.Screen:
    screen = pyte.Screen(240, 50)
    pyte.ByteStream(screen).feed(data)
    return screen


def obeyed(text: str) -> list[str]:
    """What a terminal fed ``text`` did instead of showing it: a title set, characters coloured."""
    screen = screen_after(text.encode("utf-8", "surrogateescape"))
    found = []
    if screen.title or screen.icon_name:
        found.append(f"title {screen.title!r}, icon name {screen.icon_name!r}")
    attrs = screen.cursor.attrs  # the colour in force after the output, even if scrolled off
    if (attrs.fg, attrs.bg, attrs.reverse) != ("default", "default", False):
        found.append(f"colour left on: {attrs.fg}/{attrs.bg}")
    coloured = "".join(
        char.data
        for line in screen.buffer.values()
        for char in line.values()
        if (char.fg, char.bg, char.reverse) != ("default", "default", False)
    )
    return found + ([f"coloured {coloured!r}"] if coloured else [])


def assert_inert(result: subprocess.CompletedProcess[str]) -> None:
    """Neither stream holds a raw control, and through a VT emulator neither does anything."""
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        assert obeyed(text) == [], f"{name}: {text!r}"
        assert RAW.search(text) is None, f"{name} holds a raw control: {text!r}"


def test_the_payload_does_retitle_and_recolour_a_terminal() -> None:
    """The emulator obeys each part of the payload, so the checks below can fail."""
    assert obeyed(f"{OSC_TITLE}x") == ["title 'PWNED', icon name 'PWNED'"]
    assert obeyed(f"{C1_OSC_TITLE}x") == ["title 'PWNED', icon name ''"]
    assert obeyed(f"{SGR_RED}x") == ["colour left on: red/default", "coloured 'x'"]
    assert obeyed(f"{C1_CSI_RED_BG}x") == ["colour left on: default/red", "coloured 'x'"]
    assert obeyed(PAYLOAD) != []
    assert obeyed(for_terminal(PAYLOAD)) == obeyed(json_for_terminal(PAYLOAD)) == []


@pytest.fixture
def hostile(cli: Cli) -> Cli:
    cli.env.pop("FORCE_COLOR", None)
    cli.env.pop("TTY_COMPATIBLE", None)
    cli.env["PYTHONIOENCODING"] = "utf-8:surrogateescape"
    return cli


def contract(title: str) -> str:
    sample = json.loads(SAMPLE.read_text())
    return json.dumps({"title": title, "text": f"{ARGUMENT}\n{sample['text']}"})


def test_a_completed_run_its_show_instances_and_costs_are_inert(
    hostile: Cli, openai_server: OpenAIServer
) -> None:
    clause = {"clause_id": "c1", "heading": HEADING, "text": PAYLOAD}
    openai_server.enqueue(
        ok({"clauses": [clause]}),
        ok({"risk_level": "high", "reason": PAYLOAD}),
        ok(
            {
                "summary": PAYLOAD,
                "risk_level": "high",
                "flagged_clauses": [{"clause_id": "c1", "reason": PAYLOAD}],
            }
        ),
    )
    title = ARGUMENT
    ran = hostile("run", "contract-review", "--input", "-", "--owner", ARGUMENT, stdin=contract(title))
    assert ran.returncode == 0, ran.stderr
    assert_inert(ran)
    review = json.loads(ran.stdout)
    assert review["title"] == title
    assert review["clauses"][0]["heading"] == HEADING
    assert review["clauses"][0]["reason"] == PAYLOAD
    assert review["summary"]["summary"] == PAYLOAD
    assert "日本語 مرحبا" in ran.stdout  # letters stay readable; only controls are escaped

    (row,) = [json.loads(line) for line in hostile("instances", "--json").stdout.splitlines()]
    assert row["owner"] == ARGUMENT
    for args in (["instances"], ["instances", "--json"], ["costs"], ["costs", "--json"]):
        listed = hostile(*args)
        assert listed.returncode == 0, listed.stderr
        assert_inert(listed)

    as_json = hostile("show", row["id"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert_inert(as_json)
    record = json.loads(as_json.stdout)
    assert record["instance"]["input"]["title"] == title
    assert record["instance"]["owner"] == ARGUMENT
    assert record["instance"]["output"]["summary"]["summary"] == PAYLOAD

    shown = hostile("show", row["id"])
    assert shown.returncode == 0, shown.stderr
    assert_inert(shown)
    assert "\\x1b]0;PWNED\\x07" in shown.stdout  # spelled out, readable
    assert "\\x9b41m" in shown.stdout
    assert "\\u202eevil" in shown.stdout


def test_a_stopped_run_its_error_and_its_review_are_inert(hostile: Cli, openai_server: OpenAIServer) -> None:
    openai_server.enqueue(error(401, message=PAYLOAD))  # the provider's words reach the error
    paused = hostile("run", "contract-review", "--input", "-", stdin=contract("paused"))
    assert paused.returncode == 1, paused.stderr
    no_traceback(paused)
    assert "paused at step 'extract-clauses': auth" in paused.stderr
    assert_inert(paused)

    openai_server.enqueue(*[invalid_json(f"{{clauses {PAYLOAD}")] * 3)
    stopped = hostile("run", "contract-review", "--input", "-", "--verbose", stdin=contract("to review"))
    assert stopped.returncode == 1, stopped.stderr
    assert "needs_review at step 'extract-clauses': schema_invalid" in stopped.stderr
    assert_inert(stopped)

    listed = hostile("review", "list", "--json")
    assert_inert(listed)
    (item,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert item["raw_output"] == f"{{clauses {PAYLOAD}"
    for args in (["review", "list"], ["review", "show", item["id"]], ["show", item["instance_id"]]):
        result = hostile(*args)
        assert result.returncode == 0, result.stderr
        assert_inert(result)
    shown = hostile("review", "show", item["id"])
    assert "{clauses P\\x1b]0;PWNED\\x07\\x1b[31mred\\x9b41mbg" in shown.stdout

    for instance in [json.loads(line)["id"] for line in hostile("instances", "--json").stdout.splitlines()]:
        for args in (["show", instance], ["show", instance, "--json"]):
            result = hostile(*args)
            assert result.returncode == 0, result.stderr
            assert_inert(result)


def test_a_batch_summary_is_inert(hostile: Cli, openai_server: OpenAIServer) -> None:
    (hostile.folder / "batch.jsonl").write_text(contract("batch") + "\n" + contract(ARGUMENT) + "\n")
    openai_server.enqueue(*[invalid_json(f"{{clauses {PAYLOAD}")] * 3)
    ran = hostile("run", "contract-review", "--input", "batch.jsonl", "--concurrency", "1")
    assert ran.returncode == 1, ran.stderr
    no_traceback(ran)
    assert "needs attention" in ran.stdout
    assert_inert(ran)
