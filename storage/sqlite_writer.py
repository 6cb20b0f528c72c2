"""This process's one writing connection to a SQLite file, taken in turn by its threads.

SQLite lets one transaction write at a time. A thread that finds the file locked by
another of this process's threads gets SQLITE_BUSY, and the busy handler sleeps 1, 2,
5, 10 ms... before it looks again, while the holder needs ~0.2 ms: 16 threads writing
steps spent most of their time asleep. Waiting on a lock here wakes as soon as it is
free. Other processes still meet SQLite's own lock and busy timeout.

Since the writes are serialized anyway, they also share one connection, kept open
between them: checking a connection out of SQLAlchemy's pool and back in (with its
reset) cost about as much as the step's two fenced writes themselves
(bench/overhead.py --profile). It is closed by ``release_engine`` before the engine is
disposed, never left for the garbage collector: closing a SQLite descriptor late
would drop the locks of another engine this process has opened on the same file since.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

__all__ = ["SqliteWriter", "close_writer", "sqlite_writer"]


class SqliteWriter:
    """The lock a process's threads take to write one SQLite file, and the connection they share."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._connection: Connection | None = None
        self._pid = os.getpid()
        self._busy = False

    @contextmanager
    def connect(self, engine: Engine) -> Iterator[Connection]:
        """The shared connection, for one transaction that the caller commits; hold ``lock``.

        Whatever the caller leaves uncommitted is rolled back. After an error the
        connection is given back to the pool and the next write opens a new one.
        """
        if self._pid != os.getpid():  # a forked child: its parent's connection is not its own
            self._connection, self._pid = None, os.getpid()
        if self._busy:  # a write inside a write on this thread: a connection of its own, as before
            with engine.connect() as nested:
                yield nested
            return
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self._connection = engine.connect()
        self._busy = True
        try:
            yield connection
        except BaseException:
            self._connection = None
            connection.close()  # rolls back what is open and returns it to the pool
            raise
        finally:
            self._busy = False
        if connection.in_transaction():
            connection.rollback()

    def close(self) -> None:
        with self.lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None


_WRITERS: weakref.WeakKeyDictionary[Engine, SqliteWriter] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()


def sqlite_writer(engine: Engine) -> SqliteWriter | None:
    """``engine``'s writer; None on PostgreSQL, whose rows lock one by one."""
    if engine.dialect.name != "sqlite":
        return None
    writer = _WRITERS.get(engine)
    if writer is None:
        with _WRITERS_LOCK:
            writer = _WRITERS.setdefault(engine, SqliteWriter())
    return writer


def close_writer(engine: Engine) -> None:
    """Close ``engine``'s shared writing connection, if it has one (before disposing it)."""
    writer = _WRITERS.get(engine)
    if writer is not None:
        writer.close()
