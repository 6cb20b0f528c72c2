"""Opening the database: SQLite file by default, PostgreSQL when shared.

``open_engine`` hands out one engine per database per process, shared by the
CLI, the runtime and the TUI; the first call checks the connection and brings
the schema to the newest Alembic revision, turning every failure into a
``StorageError`` whose message says what to fix. ``release_engine`` gives it
back; the last release closes its connections.

One engine, and no file handle of our own on an existing SQLite file: on POSIX,
closing *any* descriptor of a file drops every lock the process holds on it
(SQLite's "How To Corrupt An SQLite Database File", 2.2). A second open-and-close
would leave this process's connections unlocked, and another process closing
its last connection would then checkpoint and delete the ``-wal`` file under
them, losing their commits.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from storage.errors import StorageError
from storage.quick_read import HEAD_REVISION, check_sqlite_file, hard_link_problem
from storage.sqlite_writer import close_writer

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "StorageError",
    "db_reason",
    "linked_file",
    "open_engine",
    "release_engine",
    "safe_url",
    "upgrade",
]

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x5751_7E11  # advisory-lock key: one migrator at a time


@dataclass
class _Shared:
    engine: Engine
    users: int = 0
    migrated: bool = False


_ENGINES: dict[str, _Shared] = {}
_LOCK = threading.Lock()


def safe_url(url: str | URL) -> str:
    """The URL with any password masked, fit for messages and logs."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def db_reason(exc: BaseException) -> str:
    """The driver's own first line for a database error: no SQL, no bound parameters."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """This process's engine for ``url``, with the schema at the newest revision.

    Every call must be matched by ``release_engine`` (``Store.close`` does it).
    """
    parsed = _parse(url)
    key = parsed.render_as_string(hide_password=False)
    with _LOCK:
        shared = _ENGINES.get(key)
        if shared is None:
            shared = _Shared(_create(parsed))
            _ENGINES[key] = shared
        if migrate and not shared.migrated:
            try:
                upgrade(shared.engine)
            except StorageError:
                if shared.users == 0:
                    shared.engine.dispose()
                    del _ENGINES[key]
                raise
            shared.migrated = True
        shared.users += 1
        return shared.engine


def release_engine(engine: Engine) -> None:
    """Give back an engine from ``open_engine``; the last user's release closes its connections."""
    with _LOCK:
        for key, shared in _ENGINES.items():
            if shared.engine is engine:
                shared.users -= 1
                if shared.users <= 0:
                    del _ENGINES[key]
                    close_writer(engine)
                    engine.dispose()
                return
    close_writer(engine)
    engine.dispose()  # not shared (made elsewhere): closing it is the caller's intent


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(  # the URL is not echoed: it may hold a password
            "the database URL is not a valid SQLAlchemy URL; set STEPLINE_DATABASE_URL "
            "to e.g. sqlite:///stepline.db or postgresql+psycopg://user@host:5432/db"
        ) from None
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        # One engine per file, however the path was spelled (relative, via a symlink).
        parsed = parsed.set(database=os.path.realpath(parsed.database))
    return parsed


def linked_file(url: URL) -> str | None:
    """Why a SQLite URL's file must not be used when it has several hard links, else None: what
    SQLite reports only as "disk I/O error" (``quick_read.hard_link_problem``)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return hard_link_problem(Path(url.database))


def _create(parsed: URL) -> Engine:
    shown = safe_url(parsed)
    # Messages and logs never carry bound parameters: they hold inputs and model output.
    kwargs: dict[str, Any] = {"hide_parameters": True}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        check_sqlite_file(parsed.database)  # refuses unusable paths, creates a new file owner-only
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StorageError(f"cannot use database {shown}: {exc}") from None
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = db_reason(exc)
        linked = linked_file(parsed)
        if linked is not None:  # linked since check_sqlite_file looked: SQLite says "disk I/O error"
            raise StorageError(linked) from None
        if sqlite and "readonly" in reason:
            raise StorageError(
                f"database {shown} is read-only ({reason}); make the file and its folder writable "
                "(SQLite writes a -wal file beside it) or point STEPLINE_DATABASE_URL elsewhere"
            ) from None
        raise StorageError(
            f"cannot reach database {shown}: {reason}; check that the server is running "
            "and STEPLINE_DATABASE_URL is right"
        ) from None
    return engine


def _revision(connection: Connection) -> str | None:
    """The revision Alembic recorded, or None (a new database, or one from before Alembic)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config() -> Config:
    """Alembic's configuration for Stepline's migrations (imported only when one is due)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Apply pending migrations (a no-op costing one query when already current)."""
    try:
        with engine.connect() as connection:
            if _revision(connection) == HEAD_REVISION:
                return
        from alembic import command

        config = alembic_config()
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            if _revision(connection) == HEAD_REVISION:
                return  # another process migrated it meanwhile
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StorageError(
            f"could not migrate database {safe_url(engine.url)}: {db_reason(exc)}; "
            "check the database user may create tables"
        ) from None
