"""Bad input never ends in a traceback (issue 15): one line naming the input and the fix, exit 2.

Every case runs the real `stepline` in a subprocess. A single bad input writes
nothing; inside a batch (a folder, a JSONL file, `stepline submit`) a bad item
fails alone, with its reason, and the good ones run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli.conftest import SAMPLE, Cli, no_traceback

DEEP = "[" * 100_000 + "]" * 100_000
GOOD = json.loads(SAMPLE.read_text())
CONTRACTS = sorted(SAMPLE.parent.glob("*.json"))


def contract(**fields: object) -> str:
    return json.dumps({**GOOD, **fields})


def write(name: str, data: str | bytes) -> Callable[[Path], None]:
    """Put ``data`` in ``name`` in the command's folder (a str is written as UTF-8)."""

    def put(folder: Path) -> None:
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)

    return put


def with_catalog(make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """Rewrite the folder's ./stepline.toml (the catalog the command loads)."""

    def put(folder: Path) -> None:
        catalog = folder / "stepline.toml"
        catalog.write_bytes(make(catalog.read_bytes()))

    return put


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    names: str
    """How the one error line names the input (file, stdin, id or catalog)."""
    says: str
    """What is wrong, and the fix."""
    setup: Callable[[Path], None] | None = None
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)


RUN = ("run", "contract-review", "--input")
LONG_ID = "a" * 100_000
CASES = {
    # 1. Nesting: measured without recursion, the limit in the message.
    "deep-arrays-file": Case(
        (*RUN, "deep.json"),
        "input file deep.json",
        "is nested 100000 levels deep; inputs may nest at most 64 levels: flatten it",
        write("deep.json", DEEP),
    ),
    "deep-arrays-inside-an-object": Case(
        (*RUN, "inner.json"),
        "input file inner.json",
        "is nested 100001 levels deep; inputs may nest at most 64 levels",
        write("inner.json", '{"title": "t", "text": ' + DEEP + "}"),
    ),
    "deep-arrays-on-stdin": Case(
        (*RUN, "-"), "standard input", "is nested 100000 levels deep; inputs may nest at most 64", stdin=DEEP
    ),
    "65-levels-one-too-many": Case(
        (*RUN, "65.json"),
        "input file 65.json",
        "is nested 65 levels deep; inputs may nest at most 64 levels",
        write("65.json", contract(x=json.loads("[" * 64 + "]" * 64))),
    ),
    # 2. Numbers: Python's int limit, and numbers JSON (and the database) cannot hold.
    "5000-digit-integer": Case(
        (*RUN, "int.json"),
        "input file int.json",
        "has a 5000-digit integer at $.amount; integers may have at most 100 digits: send a longer number "
        "as a string",
        write("int.json", contract()[:-1] + ', "amount": ' + "9" * 5000 + "}"),
    ),
    "1e999-overflows": Case(
        (*RUN, "inf.json"),
        "input file inf.json",
        "has 1e999 at $.fees[1], which is not a finite number; JSON numbers must be finite",
        write("inf.json", contract()[:-1] + ', "fees": [1.5, 1e999]}'),
    ),
    "nan-literal": Case(
        (*RUN, "-"),
        "standard input",
        "has NaN at $.score, which is not a finite number",
        stdin=contract()[:-1] + ', "score": NaN}',
    ),
    # 5. Text PostgreSQL's JSONB cannot store, refused on every backend with its JSON path.
    "nul-in-a-string": Case(
        (*RUN, "nul.json"),
        "input file nul.json",
        "has a NUL character (\\u0000) at $.title; text may not hold NUL (PostgreSQL cannot store it): "
        "remove it",
        write("nul.json", contract(title="NDA\x00 draft")),
    ),
    "nul-in-a-key-on-stdin": Case(
        (*RUN, "-"),
        "standard input",
        'has a NUL character (\\u0000) at $.parties[1]["na\\u0000me"]',
        stdin=contract(parties=[{"name": "ACME"}, {"na\x00me": "Beta"}]),
    ),
    "unpaired-surrogate": Case(
        (*RUN, "surrogate.json"),
        "input file surrogate.json",
        "has an unpaired surrogate (\\udc00) at $.text; text must be valid Unicode",
        write("surrogate.json", contract(text="x" * 30).replace("xxx", "\\udc00", 1)),
    ),
    # 7. One size limit for a single file, stdin and a batch item.
    "over-1-MiB-file": Case(
        (*RUN, "big.json"),
        "input file big.json",
        "is 1.0 MiB; one input may be at most 1 MiB: trim it or split it into several inputs",
        write("big.json", contract(text="x" * (1024 * 1024))),
    ),
    "over-1-MiB-on-stdin": Case(
        (*RUN, "-"),
        "standard input",
        "is over 1 MiB; one input may be at most 1 MiB",
        stdin=contract(text="x" * (1024 * 1024)),
    ),
    # 8. Unreadable, not UTF-8, empty, not an object, not JSON.
    "not-utf8-file": Case(
        (*RUN, "latin1.json"),
        "input file latin1.json",
        "is not UTF-8 text (byte 14); save it as UTF-8 JSON",
        write("latin1.json", b'{"title": "caf\xe9", "text": "a contract"}'),
    ),
    "empty-file": Case(
        (*RUN, "empty.json"),
        "input file empty.json",
        "is empty; an input is one JSON object",
        write("empty.json", ""),
    ),
    "top-level-array": Case(
        (*RUN, "list.json"),
        "input file list.json",
        "holds an array, not a JSON object; an input is one object whose keys are the workflow's input "
        "fields",
        write("list.json", f"[{contract()}]"),
    ),
    "invalid-json-on-stdin": Case(
        (*RUN, "-"),
        "standard input",
        "is not valid JSON: Expecting value at line 1 column 10",
        stdin='{"title":',
    ),
    "missing-file": Case(
        (*RUN, "missing.json"),
        "input file missing.json",
        "does not exist; pass a JSON file or - for standard input",
    ),
    "unreadable-file": Case(
        (*RUN, "/proc/self/mem"),  # reading it at offset 0 fails (EIO), even as root
        "input file /proc/self/mem",
        "Input/output error; check that it is a readable file",
    ),
    "a-folder-as-the-corrected-output": Case(
        ("review", "approve", "0f3a", "--output", "corrected"),
        "input file corrected",
        "is a folder; pass a JSON file or - for standard input",
        lambda folder: (folder / "corrected").mkdir(),
    ),
    "file-name-too-long": Case(
        ("review", "approve", "0f3a", "--output", "n" * 5000),
        "input file nnnn",
        "File name too long",
    ),
    # 4. Ids: refused before any query, echoed shortened.
    "show-100000-character-id": Case(
        ("show", LONG_ID),
        "no instance with id '" + "a" * 40 + "…' (100000 characters)",
        ": an id is 32 characters of 0-9 and a-f; copy one from `stepline instances`",
    ),
    "show-id-with-punctuation": Case(
        ("show", "0f3a'; drop table x;--"),
        "no instance with id '0f3a'; drop table x;--'",
        "an id holds only 0-9 and a-f",
    ),
    "replay-100000-character-id": Case(
        ("replay", LONG_ID),
        "no instance with id '" + "a" * 40 + "…'",
        "(100000 characters): an id is 32 characters",
    ),
    "review-show-bad-id": Case(
        ("review", "show", "not-an-id"),
        "no review with id 'not-an-id'",
        "an id holds only 0-9 and a-f; copy one from `stepline review list`",
    ),
    "review-approve-100000-character-id": Case(
        ("review", "approve", LONG_ID, "--output", "fixed.json"),
        "no review with id '" + "a" * 40 + "…'",
        "an id is 32 characters",
        write("fixed.json", "{}"),
    ),
    "review-reject-id-with-a-control-character": Case(
        ("review", "reject", "0f3a\x1b[31m"),
        "no review with id '0f3a\\x1b[31m'",
        "an id holds only 0-9 and a-f",
    ),
    "run-file-name-too-long": Case(
        (*RUN, "n" * 5000),
        "input file nnnn",
        "(5000 characters): File name too long",
    ),
    "owner-not-utf8": Case(
        ("run", "contract-review", "--owner", "ana\udcff", "--input", str(SAMPLE)),
        "--owner 'ana\\xff'",
        "is not UTF-8 text; type it again in a UTF-8 terminal",
    ),
    # The database: a folder, a missing folder.
    "database-path-is-a-folder": Case(
        (*RUN, str(SAMPLE)),
        "database path",
        "is a folder; name a file in it, e.g. STEPLINE_DATABASE_URL=sqlite:///",
        lambda folder: (folder / "db").mkdir(),
        env={"STEPLINE_DATABASE_URL": "sqlite:///db"},
    ),
    "database-folder-missing": Case(
        ("instances",),
        "database folder",
        "does not exist; create it or change STEPLINE_DATABASE_URL",
        env={"STEPLINE_DATABASE_URL": "sqlite:///no/such/folder/stepline.db"},
    ),
    # 3. The catalog: not UTF-8, or nested past Python's recursion limit.
    "catalog-not-utf8": Case(
        ("instances",),
        "stepline.toml",
        "not UTF-8 text (byte 5); save the catalog as UTF-8",
        with_catalog(lambda toml: b"# caf\xe9\n" + toml),
    ),
    "catalog-nested-100000-deep": Case(
        (*RUN, str(SAMPLE)),
        "deep.toml",
        "arrays or tables are nested too deeply to read; a catalog needs only a few levels: flatten them",
        write("deep.toml", f"deep = {DEEP}\n"),
        env={"STEPLINE_CONFIG": "deep.toml"},
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_naming_it_exit_2_and_nothing_written(cli: Cli, case: Case) -> None:
    if case.setup is not None:
        case.setup(cli.folder)
    cli.env.update(case.env)

    result = cli(*case.args, stdin=case.stdin)

    assert result.returncode == 2, result.stderr[-2000:]
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    (line,) = lines
    assert line.startswith("error: ")
    assert case.names in line
    assert case.says in line
    assert len(line) < 6000  # an echoed input is shortened, never the whole 100,000 characters
    assert cli.instance_count() == 0


def summary(stdout: str) -> dict[str, int]:
    """The outcome table a batch prints: {outcome: count}."""
    return {m[1]: int(m[2]) for m in re.finditer(r"│ (\w+)\s*│\s*(\d+) │", stdout)}


def rows(cli: Cli, query: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(cli.database)) as conn:
        return [tuple(row) for row in conn.execute(query).fetchall()]


def mixed_folder(cli: Cli, good: int) -> tuple[Path, dict[str, str]]:
    """A folder of ``good`` sample contracts and bad items: {bad item's source: its reason}."""
    folder = cli.folder / "inbox"
    folder.mkdir()
    for path in CONTRACTS[:good]:
        (folder / path.name).write_text(path.read_text())
    (folder / "int.json").write_text(contract()[:-1] + ', "amount": ' + "9" * 5000 + "}")
    (folder / "nul.json").write_text(contract(title="NDA\x00"))
    (folder / "inf.json").write_text(contract()[:-1] + ', "fee": 1e999}')
    with open(os.fsencode(folder) + b"/\xff.json", "wb") as handle:  # a name that is not UTF-8
        handle.write(contract(title="Latin-1 name").encode())
    return folder, {
        f"{folder}/int.json": "has a 5000-digit integer at $.amount; integers may have at most 100 digits",
        f"{folder}/nul.json": "has a NUL character (\\u0000) at $.title",
        f"{folder}/inf.json": "has 1e999 at $.fee, which is not a finite number",
        f"{folder}/\\xff.json": "has a name that is not UTF-8; names are recorded as text: rename it",
    }


def test_in_a_batch_each_bad_item_fails_alone_and_the_good_ones_run(cli: Cli) -> None:
    folder, bad = mixed_folder(cli, good=2)
    # A JSONL file in the folder: a good line, a 100,000-deep line, a line nested just within the limit.
    within = contract(title="Within the limit", x=json.loads("[" * 63 + "]" * 63))
    lines = [
        contract(title="From the JSONL"),
        DEEP,
        within,
        '{"title": "x", "text": "' + "y" * 30 + '\\u0000"}',
    ]
    (folder / "more.jsonl").write_text("\n".join(lines) + "\n")
    bad[f"{folder}/more.jsonl:2"] = (
        f"line 2 of {folder}/more.jsonl is nested 100000 levels deep; inputs may nest at most 64 levels: "
        "flatten it"
    )
    bad[f"{folder}/more.jsonl:4"] = "has a NUL character (\\u0000) at $.text"

    result = cli("run", "contract-review", "--input", str(folder), "--concurrency", "2")

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # some need attention
    no_traceback(result)
    assert "crashed" not in result.stdout
    for source, reason in bad.items():
        (reported,) = [
            n for n, line in enumerate(result.stdout.splitlines()) if f"rejected     {source}  " in line
        ]
        assert reason in result.stdout.splitlines()[reported + 1], result.stdout
    assert summary(result.stdout) == {"completed": 4, "rejected": len(bad)}
    statuses = rows(cli, "select source, status from workflow_instance order by source")
    assert statuses == sorted(
        [(f"{folder}/{path.name}", "completed") for path in CONTRACTS[:2]]
        + [(f"{folder}/more.jsonl:1", "completed"), (f"{folder}/more.jsonl:3", "completed")]
    )


def test_submit_queues_the_good_items_and_rejects_each_bad_one_alone(cli: Cli) -> None:
    from prefect.client.orchestration import get_client

    deployment = f"bad-input-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:  # its flow runs stay scheduled: no worker needed
        made = client.create_deployment(
            flow_id=client.create_flow_from_name("stepline-queued"), name=deployment
        )
    folder, bad = mixed_folder(cli, good=1)

    try:
        result = cli(
            "submit",
            "contract-review",
            "--input",
            str(folder),
            "--deployment",
            f"stepline-queued/{deployment}",
        )
    finally:
        with get_client(sync_client=True) as client:  # the session's Prefect API is shared
            client.delete_deployment(made)

    assert result.returncode == 1, result.stderr[-3000:]  # rejected items
    no_traceback(result)
    rejected = [line for line in result.stderr.splitlines() if line.startswith("rejected: ")]
    assert len(rejected) == len(bad), result.stderr
    for reason in bad.values():
        assert any(reason in line for line in rejected), (reason, rejected)
    assert "1 instance(s) of contract-review queued in 1 flow run(s)" in result.stderr
    assert rows(cli, "select source, status from workflow_instance") == [
        (f"{folder}/{CONTRACTS[0].name}", "queued")
    ]


def _can_mount() -> bool:
    """Whether this process may make a read-only bind mount in a mount namespace of its own (root)."""
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'


@pytest.mark.skipif(not _can_mount(), reason="needs `unshare --mount` (root) for a read-only file system")
@pytest.mark.parametrize(
    "existing", [True, False], ids=["database-file-read-only", "database-folder-read-only"]
)
def test_a_database_on_a_read_only_file_system_is_one_clear_line(cli: Cli, existing: bool) -> None:
    folder = cli.folder / "data"
    folder.mkdir()
    cli.env["STEPLINE_DATABASE_URL"] = f"sqlite:///{folder / 'stepline.db'}"
    if existing:
        assert cli("instances").returncode == 0  # creates it, read-write
    command = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        READ_ONLY,
        "sh",
        str(folder),
        sys.executable,
        "-m",
        "stepline",
    ]

    result = subprocess.run(
        [*command, "run", "contract-review", "--input", str(SAMPLE)],
        cwd=cli.folder,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    no_traceback(result)
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    state = "is" if existing else "would be created"
    assert f"error: database file {folder / 'stepline.db'} {state} on a read-only file system" in line
    assert "remount it read-write or point STEPLINE_DATABASE_URL elsewhere" in line
