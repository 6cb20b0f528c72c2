"""Text a database refuses (NUL, unpaired surrogates) is stored escaped and read back as written."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlmodel
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, insert, select
from sqlmodel import AutoString, Session, SQLModel

from storage.escaping import MARK, escape_json, escape_text, unescape_json, unescape_text
from storage.models import EscapedJSON, EscapedText, WorkflowInstance
from storage.quick_read import newest_instances
from storage.store import Store

AWKWARD = [
    "nul \x00 inside",
    "\x00",
    "lone high \ud800 and low \udfff",
    "\udbff\udffd",  # the mark's own surrogate pair, unpaired in Python
    "literal \\u0000 and \\ud800 as six characters",
    f"the mark {MARK} alone",
    f"{MARK}000000 looks like an escape",
    f"{MARK}{MARK}00000",
    "plain é ✓ 😀",
    "",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_escaping_text_is_undone_exactly(text: str) -> None:
    stored = escape_text(text)

    assert "\x00" not in stored
    stored.encode("utf-8")  # no unpaired surrogate is left
    assert unescape_text(stored) == text


def test_random_text_round_trips() -> None:
    rng = random.Random(28)
    alphabet = ["\x00", "\ud800", "\udc00", MARK, "0", "f", "a", "\\", "u", "é", "😀"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert unescape_text(escape_text(text)) == text


def test_escaping_json_reaches_keys_and_nested_strings() -> None:
    value = {"a\x00": ["\ud800", {"k": "\x00"}, 1, 2.5, None, True], "n": "plain"}

    stored = escape_json(value)

    assert "\x00" not in repr(stored)
    assert unescape_json(stored) == value


def test_every_text_and_json_column_escapes() -> None:
    """A column added as plain ``Text`` or ``JSON`` would refuse a model's NUL on PostgreSQL."""
    plain = [
        f"{table.name}.{column.name}"
        for table in SQLModel.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, Text | JSON)
    ]
    assert plain == []


def _row(table: Any, made: dict[str, dict[str, Any]], text: str) -> dict[str, Any]:
    """Values for every column: ``text`` in each escaped one, a placeholder elsewhere."""
    values: dict[str, Any] = {}
    for column in table.columns:
        kind = column.type
        foreign = next(iter(column.foreign_keys), None)
        if foreign is not None:
            values[column.name] = made[foreign.column.table.name][foreign.column.name]
        elif isinstance(kind, EscapedText):
            values[column.name] = text
        elif isinstance(kind, EscapedJSON):
            values[column.name] = {text: [text, {"k": text}], "n": 1}
        elif isinstance(kind, DateTime):
            values[column.name] = datetime.now(UTC)
        elif isinstance(kind, Boolean):
            values[column.name] = False
        elif isinstance(kind, Integer):
            values[column.name] = 1
        elif isinstance(kind, Float):
            values[column.name] = 1.5
        elif isinstance(kind, String | AutoString):
            values[column.name] = "a" * min(32, getattr(kind, "length", None) or 32)
        else:
            raise AssertionError(f"no placeholder for {table.name}.{column.name} ({kind})")
    return values


@pytest.mark.parametrize("text", AWKWARD)
def test_every_escaped_column_reads_back_what_was_written(store: Store, text: str) -> None:
    """One row per table, every text and JSON column holding ``text``, read through Core and the ORM."""
    made: dict[str, dict[str, Any]] = {}
    with store.engine.begin() as connection:
        for table in SQLModel.metadata.sorted_tables:
            made[table.name] = _row(table, made, text)
            connection.execute(insert(table), made[table.name])

    with store.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            (row,) = connection.execute(select(table)).mappings().all()
            _same(dict(row), made[table.name])
    with Session(store.engine) as session:
        instance = session.exec(sqlmodel.select(WorkflowInstance)).one()
        assert instance.input == made["workflow_instance"]["input"]
        assert instance.error == text


def _same(read: dict[str, Any], written: dict[str, Any]) -> None:
    for name, value in written.items():
        if not isinstance(value, datetime):  # SQLite hands times back naive
            assert read[name] == value, name


def test_the_first_page_reads_an_escaped_error_back(tmp_path: Path) -> None:
    """``stepline tui``'s first page reads SQLite without SQLAlchemy, and undoes the escape too."""
    from storage.db import open_engine

    store = Store(open_engine(f"sqlite:///{tmp_path / 'stepline.db'}"))
    try:
        instance = store.create_instance("w", {"n": 1}, "ana", worker="w")
        with store.engine.begin() as connection:
            connection.execute(
                WorkflowInstance.__table__.update().values(error="bad \x00 \ud800 answer")  # type: ignore[attr-defined]
            )
        rows = newest_instances(tmp_path / "stepline.db", 10)
    finally:
        store.close()

    assert rows is not None
    assert [(r.id, r.error) for r in rows] == [(instance.id, "bad \x00 \ud800 answer")]
