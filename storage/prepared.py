"""The step path's statements on SQLite: compiled once, sent through ``exec_driver_sql``.

Why by hand: ``Connection.execute`` builds an execution context on every call (the compiled
cache's lookup, parameter processing, the result's set-up): on SQLite that Python is most of a
statement's cost, and a step runs six of them in its two fenced commits (``storage.runs``). Here
SQLAlchemy still compiles each statement (once per set of parameter names) and its own type
processors turn each value into what the driver stores (JSON text, datetimes), so the rows are
the same bytes as through ``execute`` (tests/storage/test_prepared.py compares them). The
connection, its transaction, its events and its error types stay SQLAlchemy's.

Only where it is safe: a Core ``Connection`` to SQLite, and a statement with no defaults computed
in Python at execution (``insert_prefetch`` / ``update_prefetch``), which only ``execute`` runs;
anything else goes through ``execute`` as before. PostgreSQL keeps ``execute``: each of its
commits costs milliseconds over TCP, beside which this saves nothing measurable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlmodel import Session

__all__ = ["execute"]


class _Prepared:
    """One statement compiled for one set of parameter names, and each bind's processor."""

    __slots__ = ("names", "processors", "sql")

    def __init__(self, sql: str, names: Sequence[str], processors: Sequence[Callable[[Any], Any] | None]):
        self.sql = sql
        self.names = tuple(names)
        self.processors = tuple(processors)

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            values.get(name) if process is None else process(values.get(name))
            for name, process in zip(self.names, self.processors, strict=True)
        )


_PREPARED: dict[tuple[Any, tuple[str, ...]], _Prepared | None] = {}
"""By (statement, sorted parameter names); None: this statement must go through ``execute``."""
_LOCK = threading.Lock()


def _prepare(statement: Any, keys: tuple[str, ...], dialect: Dialect) -> _Prepared | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names = compiled.positiontup
    if names is None or compiled.insert_prefetch or compiled.update_prefetch:
        return None
    processors = [compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
    return _Prepared(compiled.string, names, processors)


def execute(
    connection: Session | Connection,
    statement: Any,
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> Any:
    """``connection.execute(statement, values)``, prepared once on SQLite (see the module doc)."""
    if not isinstance(connection, Connection) or connection.dialect.name != "sqlite" or not values:
        return connection.execute(statement, values)
    if not isinstance(values, Mapping) and len(values) == 1:  # one row: one execute, as ``execute`` does
        values = values[0]
    first = values if isinstance(values, Mapping) else values[0]
    keys = tuple(sorted(first))
    key = (statement, keys)
    prepared = _PREPARED.get(key, False)
    if prepared is False:
        with _LOCK:
            prepared = _PREPARED[key] = _prepare(statement, keys, connection.dialect)
    if prepared is None:
        return connection.execute(statement, values)
    assert isinstance(prepared, _Prepared)
    if isinstance(values, Mapping):
        return connection.exec_driver_sql(prepared.sql, prepared.args(values))
    return connection.exec_driver_sql(prepared.sql, [prepared.args(v) for v in values])
