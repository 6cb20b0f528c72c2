"""Opening the database: SQLite file by default, PostgreSQL when shared.

``open_engine`` creates the SQLite file readable by its owner only, checks
the connection, and brings the schema to the newest Alembic revision, turning
every failure into a ``StorageError`` whose message says what to fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

__all__ = ["StorageError", "open_engine", "safe_url"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x5751_7E11  # advisory-lock key: one migrator at a time


class StorageError(Exception):
    """The database cannot be opened, reached or migrated; the message says how to fix it."""


def safe_url(url: str) -> str:
    """The URL with any password masked, fit for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """A ready engine for ``url`` with the schema at the newest revision."""
    shown = safe_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(  # the URL is not echoed: it may hold a password
            "the database URL is not a valid SQLAlchemy URL; set STEPLINE_DATABASE_URL "
            "to e.g. sqlite:///stepline.db or postgresql+psycopg://user@host:5432/db"
        ) from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed.database)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StorageError(f"cannot use database {shown}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(
            f"cannot reach database {shown}: {reason}; check that the server is running "
            "and STEPLINE_DATABASE_URL is right"
        ) from None
    if migrate:
        try:
            upgrade(engine)
        except StorageError:
            engine.dispose()
            raise
    return engine


def _prepare_sqlite_file(database: str | None) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database)
    if not path.parent.exists():
        raise StorageError(
            f"database folder {path.parent} does not exist; create it or change STEPLINE_DATABASE_URL"
        )
    # Created by us, owner-only: the file holds prompts, inputs and model outputs.
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Apply pending migrations (a no-op costing one query when already current)."""
    config = _alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            current = MigrationContext.configure(connection).get_current_revision()
            if current == head:
                return
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StorageError(
            f"could not migrate database {safe_url(str(engine.url))}: {exc}; "
            "check the database user may create tables"
        ) from None
