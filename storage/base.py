"""What every part of the store shares: short sessions, retries on dropped connections, one error type.

Each store method runs as one function over a fresh session (``_run``). A
connection that drops mid-transaction (a restarted or failed-over PostgreSQL,
``pg_terminate_backend``, a proxy timing out) never committed, so the whole
function is run again on a new connection, for a bounded time. Any other
database error, or one that outlasts the retries, becomes ``DatabaseFailed``
with the driver's one-line reason: never SQL or bound parameters, which hold
inputs and model output.

A commit whose acknowledgement was lost may have landed. Re-running an UPDATE
sets the same values again; an INSERT passes ``landed``, which says whether
the row is already there, so a retry never writes it twice. Rows are inserted
as plain values (``insert_rows``), never through the ORM's unit of work: an
object left over from a failed commit can come back detached, and a new
session would then take it for a stored row and skip its INSERT.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlmodel import Session, SQLModel
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from storage.db import db_reason, linked_file, release_engine, safe_url
from storage.errors import DatabaseFailed
from storage.models import Attempt, StepRun, WorkflowInstance
from storage.prepared import execute
from storage.sqlite_writer import sqlite_writer

__all__ = ["StoreBase", "insert_rows", "row_exists", "row_values", "update_row"]

_BY_ID: dict[type[SQLModel], Any] = {}
"""``update_row``'s statement per table, built once."""
_INSERTS: dict[Any, Any] = {}
"""``insert_rows``' statement per table, built once (on every step's path)."""
_COLUMNS: dict[Any, tuple[str, ...]] = {}
"""Each table's column names, read once (walking a ``ColumnCollection`` costs per row)."""

T = TypeVar("T")
C = TypeVar("C", Session, Connection)

_log = logging.getLogger("stepline.storage")


def _dropped(dialect: str) -> Callable[[BaseException], bool]:
    """Whether an error is a lost connection (its transaction never committed): worth a new try."""

    def check(exc: BaseException) -> bool:
        if not isinstance(exc, DBAPIError):
            return False
        if exc.connection_invalidated:
            return True
        # psycopg raises OperationalError for a refused or reset connection that SQLAlchemy does
        # not always flag; on SQLite an OperationalError is a real error (no such table, read-only,
        # locked past its 30 s busy timeout) that another try would not fix.
        return isinstance(exc, OperationalError) and dialect != "sqlite"

    return check


class StoreBase:
    """The engine and the session discipline; the aggregates in this package build on it."""

    RETRY_FOR_S = 20.0
    """How long a statement is retried across dropped connections before it fails."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        """Give the engine back (it is shared by every store of this process on the same database)."""
        release_engine(self.engine)

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _run(
        self,
        what: str,
        work: Callable[[Session], T],
        *,
        landed: Callable[[Session], T | None] | None = None,
    ) -> T:
        """``work`` in a fresh session, retried as a whole on a dropped connection.

        ``landed`` is asked first on a retry: a non-None answer means the earlier
        try committed after all, and is returned as the result.
        """
        return self._retried(what, self._session, work, landed)

    def _run_core(
        self,
        what: str,
        work: Callable[[Connection], T],
        *,
        landed: Callable[[Connection], T | None] | None = None,
    ) -> T:
        """``_run`` on a bare Core connection: the path of every request a step makes.

        No ORM session: its unit of work and statement handling cost several
        times the SQL itself on SQLite (bench/attempt_writes.py prints both).
        ``work`` commits; what it has not committed is rolled back.
        """
        writer = sqlite_writer(self.engine)
        if writer is None:
            return self._retried(what, self.engine.connect, work, landed)
        with writer.lock:
            return self._retried(what, functools.partial(writer.connect, self.engine), work, landed)

    def _retried(
        self,
        what: str,
        opener: Callable[[], AbstractContextManager[C]],
        work: Callable[[C], T],
        landed: Callable[[C], T | None] | None,
    ) -> T:
        dropped = _dropped(self.engine.dialect.name)
        try:  # the first try outside tenacity: building its Retrying costs more than a commit
            with opener() as connection:
                return work(connection)
        except SQLAlchemyError as exc:
            if not dropped(exc):
                raise self._failed(what, exc) from None
            _log.warning("database connection lost while %s (try 1); retrying", what)
        retrying = Retrying(
            retry=retry_if_exception(dropped),
            stop=stop_after_delay(self.RETRY_FOR_S),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1),
            before_sleep=lambda state: _log.warning(
                "database connection lost while %s (try %d); retrying", what, state.attempt_number + 1
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt, opener() as connection:
                    if landed is not None:  # an earlier try may have committed before it dropped
                        found = landed(connection)
                        if found is not None:
                            return found
                    return work(connection)
        except SQLAlchemyError as exc:
            raise self._failed(what, exc) from None
        raise AssertionError("unreachable: tenacity returns or re-raises")

    def _failed(self, what: str, exc: SQLAlchemyError) -> DatabaseFailed:
        where = safe_url(self.engine.url)
        # A name linked after the store opened: SQLite only says "disk I/O error".
        reason = linked_file(self.engine.url) or db_reason(exc)
        return DatabaseFailed(f"the database {where} failed while {what}: {reason}")


def update_row(
    session: Session | Connection,
    model: type[WorkflowInstance] | type[StepRun] | type[Attempt],
    row_id: str,
    values: dict[str, Any],
) -> None:
    """One UPDATE by primary key (no read first: this is on every step's path)."""
    statement = _BY_ID.get(model)
    if statement is None:  # SET takes its columns from the parameters' keys, so one statement serves all
        table = model.__table__  # type: ignore[union-attr]
        statement = _BY_ID[model] = update(table).where(table.c.id == bindparam("row_id"))
    result = execute(session, statement, {**values, "row_id": row_id})
    if result.rowcount != 1:
        raise KeyError(f"no {model.__tablename__} with id {row_id}")


def row_values(row: SQLModel) -> dict[str, Any]:
    """A table model object as its table's column values."""
    table = type(row).__table__  # type: ignore[attr-defined]
    return {c.name: getattr(row, c.name) for c in table.columns}


def row_exists(session: Session | Connection, model: type[SQLModel], row_id: str) -> bool:
    """Whether the row with this primary key is stored (a Core SELECT: no object is loaded)."""
    table = model.__table__  # type: ignore[attr-defined]
    return session.execute(select(table.c.id).where(table.c.id == row_id)).first() is not None


def insert_rows(
    session: Session | Connection, *rows: SQLModel | tuple[type[SQLModel], dict[str, Any]]
) -> None:
    """INSERT these rows' values as they are (see the module docstring for why not ``add``).

    A row is a model object or (model, values): the hot path passes plain values,
    since building a table model object costs more than its INSERT.
    """
    by_table: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        if isinstance(row, tuple):
            model, given = row
            table = model.__table__  # type: ignore[attr-defined]
            names = _COLUMNS.get(table)
            if names is None:
                names = _COLUMNS[table] = tuple(c.name for c in table.columns)
            values = {name: given.get(name) for name in names}
        else:
            table = type(row).__table__  # type: ignore[attr-defined]
            values = row_values(row)
        by_table.setdefault(table, []).append(values)
    for table, values_list in by_table.items():
        statement = _INSERTS.get(table)
        if statement is None:
            statement = _INSERTS[table] = insert(table)
        execute(session, statement, values_list)
