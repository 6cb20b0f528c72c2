"""The newest instances from a SQLite file with the standard library alone: the TUI's first page.

``stepline tui`` shows its first rows before SQLAlchemy and SQLModel are loaded (about half a
second of imports, more than a bare Textual app takes to paint); they load in a worker after
the first paint, and every later read goes through the ``Store``. This module imports only the
standard library, ``storage.errors`` and ``storage.escaping`` (the ``error`` column is stored
escaped like every text column), and reads through a read-only ``sqlite3`` connection
that it closes before returning.

It reads a file only when it is a Stepline database at the newest revision (``HEAD_REVISION``,
one query): anything else (no file yet, an older schema, not a database) returns None, and the
caller opens the store the usual way, which creates, migrates or refuses the file with a
message. The query is built from ``InstanceRow``'s fields, which are ``WorkflowInstance``'s
column names; ``tests/tui/test_first_paint.py`` checks them against the table, and that this
reader and ``Store.search_instances`` return the same rows.

Closing the connection is safe for the engine that opens the file later in the same process:
both go through the one SQLite library, which keeps the descriptors of a file whose locks
another connection holds (the POSIX lock hazard in ``storage.db`` concerns descriptors opened
outside SQLite).
"""

from __future__ import annotations

import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from storage.errors import StorageError
from storage.escaping import unescape_text

__all__ = [
    "HEAD_REVISION",
    "InstanceRow",
    "check_sqlite_file",
    "hard_link_problem",
    "newest_instances",
    "sqlite_path",
]

HEAD_REVISION = "0011"
"""The newest migration in ``migrations/versions`` (a test keeps it true). Every command opens
the store; a database already at it is checked with one query, without loading Alembic and its
scripts (half a second on the path to a command's first request)."""

_PLAIN_SQLITE = re.compile(r"^sqlite:///(?P<database>[^?#%]+)$")


class InstanceRow(NamedTuple):
    """What the instances list shows of an instance; each field is a ``WorkflowInstance`` column."""

    id: str
    workflow: str
    status: str
    failed_step: str | None
    failure_class: str | None
    source: str | None
    error: str | None
    created_at: datetime
    """Aware, in UTC (SQLite keeps it as naive UTC text)."""


_ERROR = InstanceRow._fields.index("error")
_QUERY = f"SELECT {', '.join(InstanceRow._fields)} FROM workflow_instance ORDER BY created_at DESC LIMIT ?"  # noqa: S608 (field names, not input)


def sqlite_path(url: str) -> Path | None:
    """The file a plain SQLite URL (``sqlite:///stepline.db``) names, resolved as ``storage.db``
    resolves it; None for any other URL (PostgreSQL, in memory, query options, escapes)."""
    found = _PLAIN_SQLITE.match(url)
    if found is None or found["database"] == ":memory:":
        return None
    return Path(os.path.realpath(found["database"]))


def newest_instances(path: Path, limit: int) -> list[InstanceRow] | None:
    """The newest ``limit`` instances in the SQLite file ``path``, as ``Store.search_instances()``
    lists them; None unless it is a Stepline database at ``HEAD_REVISION`` that reads cleanly."""
    if hard_link_problem(path) is not None:
        return None  # opening the store refuses it, with the message
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        if found is None or found[0] != HEAD_REVISION:
            return None
        rows = connection.execute(_QUERY, (limit,)).fetchall()
    except sqlite3.Error:  # not a database, no such table, locked past the timeout...
        return None
    finally:
        connection.close()
    return [_instance_row(row) for row in rows]


def _instance_row(row: tuple[Any, ...]) -> InstanceRow:
    error = row[_ERROR]
    return InstanceRow._make(
        (*row[:_ERROR], None if error is None else unescape_text(error), *row[_ERROR + 1 : -1], _utc(row[-1]))
    )


def _utc(stored: str) -> datetime:
    when = datetime.fromisoformat(stored)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def check_sqlite_file(database: str | None) -> None:
    """Refuse paths SQLite cannot use, and create a new file owner-only.

    An existing file is never opened here (see ``storage.db``'s docstring): only ``stat`` and
    ``access`` look at it.
    """
    if not database or database == ":memory:":
        return
    path = Path(database)
    fix = "or point STEPLINE_DATABASE_URL elsewhere"
    if path.is_dir():
        raise StorageError(
            f"database path {path} is a folder; name a file in it, e.g. "
            f"STEPLINE_DATABASE_URL=sqlite:///{path / 'stepline.db'}"
        )
    if not path.parent.is_dir():
        raise StorageError(
            f"database folder {path.parent} does not exist; create it or change STEPLINE_DATABASE_URL"
        )
    journal = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
        state = "is" if path.exists() else "would be created"
        raise StorageError(
            f"database file {path} {state} on a read-only file system; remount it read-write {fix}"
        )
    if path.exists():
        if not path.is_file():
            raise StorageError(f"database path {path} is not a regular file; {fix}")
        linked = hard_link_problem(path)
        if linked is not None:
            raise StorageError(linked)
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"database file {path} is read-only for this user; chmod u+rw it {fix}")
        if not os.access(path.parent, os.W_OK | os.X_OK) and not all(j.exists() for j in journal):
            raise StorageError(
                f"database folder {path.parent} is read-only for this user, and SQLite must create "
                f"{journal[0].name} beside the database; make the folder writable {fix}"
            )
        return
    # Created by us, owner-only: the file holds prompts, inputs and model outputs. O_EXCL: a
    # file another process created meanwhile is left alone, never opened and closed here.
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"cannot create database file {path}: {exc.strerror or exc}; {fix}") from None
    os.close(fd)  # new and empty: no SQLite connection anywhere holds it yet


def hard_link_problem(path: Path) -> str | None:
    """Why ``path`` must not be opened when it is one of several hard links to its file, else None.

    SQLite finds a database's ``-wal`` and ``-shm`` files by the name it was opened under, and
    within one process shares locks by inode: two names for one file give two write-ahead logs
    and mismatched locks, so commits made under one name are lost or corrupt the file seen through
    the other, and a process holding both reports only "disk I/O error". Only ``stat`` looks.
    """
    try:
        found = path.stat()
    except OSError:
        return None
    if found.st_nlink <= 1:
        return None
    try:  # the other names are usually in the same folder (``ln a.db b.db``)
        others = sorted(
            entry.name
            for entry in os.scandir(path.parent)
            if entry.name != path.name
            and entry.is_file(follow_symlinks=False)
            and entry.inode() == found.st_ino
        )
    except OSError:
        others = []
    also = f" (also named {', '.join(others)} in {path.parent})" if others else ""
    return (
        f"database file {path} has {found.st_nlink} hard links{also}; SQLite keeps its -wal and "
        "-shm files by name, so one database under several names loses or corrupts commits: "
        "remove the other names and use one path, or `cp` the file to make a separate database"
    )
