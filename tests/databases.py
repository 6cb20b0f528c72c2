"""Test databases: a fresh SQLite file, or a fresh schema on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

PG_SERVER = os.environ.get("STEPLINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


_PLAIN = PG_SERVER.replace("postgresql+psycopg://", "postgresql://")
"""The same server as psycopg (without SQLAlchemy's driver prefix) takes it."""


@contextmanager
def _created(kind: str, drop_options: str = "") -> Iterator[str]:
    """A new ``kind`` (SCHEMA or DATABASE) on the test server, by name, dropped afterwards."""
    import psycopg

    name = f"stepline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_PLAIN, autocommit=True) as conn:
        conn.execute(f'CREATE {kind} "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(_PLAIN, autocommit=True) as conn:
            conn.execute(f'DROP {kind} IF EXISTS "{name}" {drop_options}')


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema, dropped afterwards."""
    with _created("SCHEMA", "CASCADE") as schema:
        yield f"{PG_SERVER}?options=-csearch_path%3D{schema}"


@contextmanager
def database_url(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'stepline.db'}"
    else:
        with postgres_schema_url() as url:
            yield url


@contextmanager
def postgres_database_url(driver: str = "postgresql+asyncpg") -> Iterator[str]:
    """A new, empty database on the same server (for a Prefect server's own tables), dropped afterwards."""
    with _created("DATABASE", "WITH (FORCE)") as name:
        yield f"{driver}://{_PLAIN.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"


def sqlite_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of ``query`` read from outside, as another process would; the connection is closed.

    (``with sqlite3.connect(...)`` only commits: a connection left open keeps the
    file busy and changes when SQLite checkpoints.)
    """
    with closing(sqlite3.connect(path)) as conn:
        return [tuple(row) for row in conn.execute(query).fetchall()]


def postgres_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """Rows of ``query`` on the database (and schema) of a SQLAlchemy URL, over a new connection."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return [tuple(row) for row in conn.execute(query).fetchall()]
