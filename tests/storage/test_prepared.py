"""The step path's prepared statements on SQLite store exactly what ``Connection.execute`` stores.

Read back from the file by another connection (``sqlite3``, not SQLAlchemy), column by column.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, bindparam, insert, update
from sqlalchemy.exc import IntegrityError

from storage.base import insert_rows
from storage.db import open_engine, release_engine
from storage.models import Attempt, NewStepRun, StepRun
from storage.prepared import _prepare, execute
from storage.store import Store

ATTEMPT = Attempt.__table__  # type: ignore[attr-defined]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'prepared.db'}")
    yield engine
    release_engine(engine)


def attempt_values(attempt_id: str, instance_id: str, version: str, run_id: str) -> dict[str, Any]:
    values: dict[str, Any] = {c.name: None for c in ATTEMPT.columns}
    values.update(
        id=attempt_id,
        instance_id=instance_id,
        step_run_id=run_id,
        step="extract",
        attempt_number=2**40,  # beyond 32 bits
        provider="openai",
        model_id="m",
        provider_model="gpt",
        prompt_version_id=version,
        sampling={"temperature": 0.0, "top_p": 1.0, "seed": None},
        request_messages=[{"role": "user", "content": 'Grüße, 東京 \u2028 "quoted" \\ \x00'}],
        raw_output='{"a": 1,}',
        parsed_output={"nested": [[[{"deep": True}]]], "big": 10**30, "float": 1e-300},
        started_at=datetime(2026, 12, 2, 9, 30, 1, 123456, tzinfo=UTC),
        finished_at=datetime(2026, 12, 2, 10, 30, 1, tzinfo=timezone(timedelta(hours=2))),
        latency_ms=12.5,
    )
    return values


def test_an_insert_and_an_update_store_the_same_bytes_as_execute(engine: Engine, tmp_path: Path) -> None:
    store = Store(engine)
    instance = store.create_instance("contract-review", {"n": 1}, "ana", worker="w")
    version = store.prompt_version("extract", "sys", "user", "h1", "ana")
    run, other = (
        NewStepRun(instance_id=instance.id, step="extract", index=n, input={"n": n}) for n in (0, 1)
    )
    changes = {"raw_output": "ok", "parsed_output": {"x": [1, 2]}, "finished_at": datetime.now(UTC)}
    with engine.connect() as connection:
        insert_rows(connection, run.row(), other.row())
        execute(connection, insert(ATTEMPT), [attempt_values("a" * 32, instance.id, version, run.id)])
        connection.execute(insert(ATTEMPT), [attempt_values("b" * 32, instance.id, version, other.id)])
        by_id = update(ATTEMPT).where(ATTEMPT.c.id == bindparam("row_id"))
        assert execute(connection, by_id, {**changes, "row_id": "a" * 32}).rowcount == 1
        assert connection.execute(by_id, {**changes, "row_id": "b" * 32}).rowcount == 1
        connection.commit()
    names = [c.name for c in ATTEMPT.columns if c.name not in ("id", "step_run_id")]
    query = f"select {', '.join(names)} from attempt where id = ?"  # noqa: S608 (our own column names)
    with closing(sqlite3.connect(tmp_path / "prepared.db")) as reader:
        prepared, through_execute = (reader.execute(query, (c * 32,)).fetchall() for c in "ab")
    assert prepared == through_execute
    (row,) = prepared
    assert row[names.index("parsed_output")] == '{"x": [1, 2]}'
    detail = store.instance_detail(instance.id)
    assert detail is not None
    (back,) = [a for a in detail.attempts if a.id == "a" * 32]
    original = attempt_values("a" * 32, instance.id, version, run.id)
    assert back.request_messages == original["request_messages"]
    assert back.attempt_number == 2**40
    assert back.parsed_output == {"x": [1, 2]}


def test_a_statement_with_a_default_computed_at_execution_goes_through_execute(engine: Engine) -> None:
    """Only ``execute`` runs Python-side defaults (an ``onupdate``): such a statement is not prepared."""
    table = Table(
        "touched",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String),
        Column("stamp", String, onupdate=lambda: "touched"),
    )
    table.create(engine)
    with engine.connect() as connection:
        execute(connection, insert(table), {"id": 1, "name": "a", "stamp": None})
        execute(connection, update(table).where(table.c.id == 1), {"name": "b"})
        connection.commit()
        assert connection.execute(table.select()).all() == [(1, "b", "touched")]


def test_a_driver_error_is_sqlalchemys_error_as_before(engine: Engine) -> None:
    store = Store(engine)
    instance = store.create_instance("contract-review", {"n": 1}, "ana", worker="w")
    version = store.prompt_version("extract", "sys", "user", "h1", "ana")
    run = NewStepRun(instance_id=instance.id, step="extract", index=0, input={"n": 1})
    with engine.connect() as connection:
        insert_rows(connection, run.row())
        execute(connection, insert(ATTEMPT), [attempt_values("c" * 32, instance.id, version, run.id)])
        with pytest.raises(IntegrityError):
            execute(connection, insert(ATTEMPT), [attempt_values("c" * 32, instance.id, version, run.id)])


def test_the_step_paths_statements_are_the_ones_prepared(engine: Engine) -> None:
    """The guard, the step run's and the attempt's INSERTs and UPDATEs take the prepared path."""
    from storage.fencing import _GUARD

    step_runs = StepRun.__table__  # type: ignore[attr-defined]
    statements = [
        (_GUARD, ("fence_id", "fence_now", "fence_token")),
        (insert(ATTEMPT), tuple(sorted(c.name for c in ATTEMPT.columns))),
        (insert(step_runs), tuple(sorted(c.name for c in step_runs.columns))),
        (
            update(step_runs).where(step_runs.c.id == bindparam("row_id")),
            ("attempts", "failure_class", "finished_at", "model_id", "output", "row_id", "status"),
        ),
    ]
    for statement, keys in statements:
        assert _prepare(statement, keys, engine.dialect) is not None, statement
