"""flows.inputs: the one reader's limits, and why each one is there.

The command-line cases (every bad input through the real `stepline`) are in
tests/cli/test_bad_input.py; these pin the reader itself, and check against
the real PostgreSQL that what it refuses is what JSONB cannot store.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from flows import inputs
from flows.inputs import (
    MAX_DEPTH,
    MAX_INPUT_BYTES,
    MAX_INT_DIGITS,
    check_payload,
    id_problem,
    jsonl_lines,
    parse_json,
)
from steps.errors import InputError
from tests.databases import PG_SERVER
from tests.unit.test_import_hygiene import SDKS, loaded_after


def nested(levels: int) -> str:
    """An object whose field ``x`` holds arrays nested so the whole is ``levels`` deep."""
    return '{"x": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def refused(data: bytes | str) -> str:
    with pytest.raises(InputError) as caught:
        parse_json(data.encode() if isinstance(data, str) else data, "line 3 of inbox.jsonl")
    return caught.value.message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "[" * 100_000 + "]" * 100_000,
            "line 3 of inbox.jsonl is nested 100000 levels deep; inputs may nest at most 64 levels: "
            "flatten it",
        ),
        (nested(MAX_DEPTH + 1), "is nested 65 levels deep"),
        ('{"n": ' + "9" * 5000 + "}", "has a 5000-digit integer at $.n; integers may have at most 100"),
        ('{"n": -' + "9" * 101 + "}", "has a 101-digit integer at $.n"),
        ('{"a": [1, 1e999]}', "has 1e999 at $.a[1], which is not a finite number"),
        ('{"a": -Infinity}', "has -Infinity at $.a, which is not a finite number"),
        ('{"a": {"b": NaN}}', "has NaN at $.a.b"),
        ('{"a": "x\\u0000y"}', "has a NUL character (\\u0000) at $.a; text may not hold NUL"),
        ('{"a": [{"k\\u0000": 1}]}', 'has a NUL character (\\u0000) at $.a[0]["k\\u0000"]'),
        ('{"a": "\\ud800"}', "has an unpaired surrogate (\\ud800) at $.a; text must be valid Unicode"),
        (b'{"a": "caf\xe9"}', "is not UTF-8 text (byte 10); save it as UTF-8 JSON"),
        (" \n", "is empty; an input is one JSON object"),
        ("[1, 2]", "holds an array, not a JSON object"),
        ('"text"', "holds a string, not a JSON object"),
        ('{"a": ', "is not valid JSON: Expecting value at line 1 column 7"),
        # Brackets in an unclosed string are not nesting: json stops at the string.
        ('{"a": "' + "[" * 1000, "is not valid JSON: Unterminated string"),
    ],
    ids=[
        "deep-array",
        "one-level-too-deep",
        "5000-digit-int",
        "101-digit-negative-int",
        "1e999",
        "minus-infinity",
        "nan",
        "nul-in-value",
        "nul-in-key",
        "lone-surrogate",
        "not-utf8",
        "blank",
        "array-top-level",
        "string-top-level",
        "invalid-json",
        "brackets-in-unclosed-string",
    ],
)
def test_a_bad_input_is_one_message_naming_it(data: bytes | str, message: str) -> None:
    said = refused(data)
    assert said.startswith("line 3 of inbox.jsonl ")
    assert message in said
    assert "\n" not in said


def test_a_recursion_error_from_json_is_reported_as_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The nesting is measured before json parses; should json still recurse too deeply
    # (a smaller recursion limit, a future json), the message is the same kind.
    monkeypatch.setattr(inputs, "_too_deep", lambda text: None)
    assert refused("[" * 100_000 + "]" * 100_000) == (
        "line 3 of inbox.jsonl is nested more than 64 levels deep; inputs may nest at most 64 levels: "
        "flatten it"
    )


class Deep(BaseModel):
    title: str
    x: Any


def test_input_at_every_limit_passes_and_is_storable_downstream() -> None:
    text = (
        '{"title": "caf\\u00e9 \\ud83d\\ude00", "x": ' + "[" * (MAX_DEPTH - 2) + "[1e308, "
        f"-{'9' * MAX_INT_DIGITS}, " + '"' + "[" * 500 + '"]' + "]" * (MAX_DEPTH - 2) + "}"
    )
    payload = parse_json(("\ufeff" + text).encode(), "input file limits.json")  # a BOM is accepted
    assert payload["title"] == "café 😀"
    model = Deep.model_validate(payload)  # pydantic validates it
    dumped = json.dumps(model.model_dump(mode="json"))  # json writes it, as the store does
    assert json.loads(dumped) == payload
    check_payload(model, "it")  # and it passes again at parse_input, as a model
    psycopg = pytest.importorskip("psycopg")
    url = PG_SERVER.replace("postgresql+psycopg://", "postgresql://")
    with contextlib.closing(psycopg.connect(url, autocommit=True)) as conn:
        (stored,) = conn.execute("select %s::jsonb", (dumped,)).fetchone() or (None,)
    assert stored == json.loads(dumped, parse_float=lambda s: int(Decimal(s)))  # numeric: 1e308 is exact


@pytest.mark.parametrize(
    "payload",
    [{"a": "x\x00y"}, {"a\x00": 1}, {"a": math.inf}, {"a": math.nan}, {"a": "\ud800"}],
    ids=["nul-value", "nul-key", "inf", "nan", "lone-surrogate"],
)
def test_what_the_reader_refuses_postgresql_jsonb_refuses_too(payload: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        check_payload(payload, "input")
    psycopg = pytest.importorskip("psycopg")
    url = PG_SERVER.replace("postgresql+psycopg://", "postgresql://")
    with contextlib.closing(psycopg.connect(url, autocommit=True)) as conn, pytest.raises(psycopg.DataError):
        conn.execute("select %s::jsonb", (json.dumps(payload),))


def test_payloads_built_in_code_are_checked_without_recursion() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    deep: Any = {}
    for _ in range(100_000):
        deep = {"x": deep}
    for payload, message in [
        ({"a": cycle}, "is nested more than 64 levels deep"),
        (deep, "is nested more than 64 levels deep"),
        ({"a": [10**5000]}, "has a 5001-digit integer at $.a[0]"),
        ({"a": float("inf")}, "has inf at $.a"),
        (Deep(title="a\x00", x=None), "has a NUL character (\\u0000) at $.title"),
    ]:
        with pytest.raises(InputError, match=r"^input ") as caught:
            check_payload(payload, "input")
        assert message in caught.value.message
    check_payload({"ok": [True, None, 10**99, -1.5, "text"]}, "input")


def test_jsonl_lines_skips_an_oversized_line_without_holding_it() -> None:
    stream = io.BytesIO(b'{"a": 1}\n' + b"x" * (MAX_INPUT_BYTES + 5) + b"\n\n" + b"y" * MAX_INPUT_BYTES)
    lines = list(jsonl_lines(stream))
    assert [(number, size) for number, _, size in lines] == [
        (1, 8),
        (2, MAX_INPUT_BYTES + 5),
        (3, 0),
        (4, MAX_INPUT_BYTES),  # exactly at the limit, with no final newline: accepted
    ]
    assert lines[0][1] == b'{"a": 1}\n'
    assert lines[1][1] is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0f3a", None),
        ("0123456789abcdef0123456789abcdef", None),
        ("a" * 100_000, "no instance with id '" + "a" * 40 + "…' (100000 characters): an id is 32"),
        ("0f3a;drop", "no instance with id '0f3a;drop': an id holds only 0-9 and a-f"),
        ("0F3A", "an id holds only 0-9 and a-f"),
        ("0f3a\n", "no instance with id '0f3a\\n'"),
        ("\udcff", "no instance with id '\\xff'"),
        ("", "an empty id matches nothing"),
    ],
    ids=["prefix", "full-id", "100000-chars", "punctuation", "uppercase", "newline", "not-utf8", "empty"],
)
def test_an_id_that_cannot_be_one_is_named_shortened(value: str, problem: str | None) -> None:
    said = id_problem("instance", value, "stepline instances")
    if problem is None:
        assert said is None
    else:
        assert said is not None
        assert problem in said
        assert said.endswith("copy one from `stepline instances`")
        assert len(said) < 200


def test_the_reader_loads_neither_prefect_nor_an_sdk() -> None:
    # `stepline run` reads its input before Prefect loads, so a bad one fails fast.
    assert loaded_after("import flows.inputs") & {"prefect", "textual", *SDKS} == set()
