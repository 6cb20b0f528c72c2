"""How ``stepline tui`` starts: its first rows on screen before SQLAlchemy, the settings or Prefect.

    first_page()   the database URL as the settings give it, read without them
                   (``database_url``); for a plain SQLite file at the newest schema revision,
                   its newest instances, read with ``sqlite3`` (``storage.quick_read``)
    open_store()   what every command does: load the settings, open the engine (the connection
                   and the migration check) and the ``Store``

On a plain SQLite file the app paints ``first_page()`` and calls ``open_store()`` in a worker
once the rows are on screen; for anything else (PostgreSQL, a new file, an older schema)
``open_store()`` runs first, as for every other command. Why: on the way to the first paint,
the settings (pydantic-settings and the step definitions they validate against, about 0.4 s)
and SQLAlchemy with the store's models (about 0.8 s) cost more than a bare Textual app's whole
first paint (``bench/tui_first_paint.py``).

Bad input still stops before the app, with one line and exit code 2: an unreadable or invalid
TOML catalog, a missing ``STEPLINE_CONFIG`` file or an unusable database path take the usual
path, whose errors say what to fix. Only settings that are valid TOML but not valid settings
(a model naming an unknown provider, say) are found after the first paint; the app then ends
with the same line and exit code 2 (``StepLineApp.failed_to_open``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from storage.quick_read import check_sqlite_file, newest_instances, sqlite_path

if TYPE_CHECKING:
    from storage.quick_read import InstanceRow
    from storage.store import Store

__all__ = ["DEFAULT_DATABASE_URL", "database_url", "first_page", "open_store"]

DEFAULT_DATABASE_URL = "sqlite:///stepline.db"
"""``steps.settings.Settings.database_url``'s default (``tests/tui/test_first_paint.py`` keeps
this module's reading equal to the settings')."""


def database_url() -> str | None:
    """``load_settings().database_url`` without loading the settings.

    ``STEPLINE_DATABASE_URL`` in any case (pydantic-settings matches variable names so), else the
    catalog's top-level ``database_url``, else the default. None when that cannot be told so
    (the catalog cannot be read or is not TOML, the value is not a string, two variables differ
    only in case): the settings are loaded before the app then, and say what is wrong.
    """
    named = [value for key, value in os.environ.items() if key.lower() == "stepline_database_url"]
    if len(named) > 1:
        return None
    if named:
        return named[0]
    import tomllib

    try:
        with _catalog_path().open("rb") as handle:
            catalog = tomllib.load(handle)
    except (OSError, ValueError, RecursionError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return None
    url = catalog.get("database_url", DEFAULT_DATABASE_URL)
    return url if isinstance(url, str) else None


def _catalog_path() -> Path:
    """``steps.settings.catalog_path()``, without importing ``steps`` (which loads the step
    definitions): ``$STEPLINE_CONFIG``, else ``./stepline.toml``, else the built-in catalog."""
    configured = os.environ.get("STEPLINE_CONFIG")
    if configured:
        return Path(configured)
    local = Path("stepline.toml")
    if local.is_file():
        return local
    spec = importlib.util.find_spec("steps")  # finds the package without running it
    if spec is None or spec.origin is None:  # not installed: the settings will say so
        return Path("default_catalog.toml")
    return Path(spec.origin).with_name("default_catalog.toml")


def first_page(limit: int) -> tuple[str, list[InstanceRow]] | None:
    """The database as shown (its URL) and its newest ``limit`` instances, read without
    SQLAlchemy; None when the store must be opened first (not a plain SQLite file at the
    newest revision). Raises ``StorageError`` for a path SQLite cannot use, as the store would."""
    url = database_url()
    path = None if url is None else sqlite_path(url)
    if path is None:
        return None
    check_sqlite_file(str(path))
    rows = newest_instances(path, limit)
    return None if rows is None else (f"sqlite:///{path}", rows)


def open_store() -> tuple[Store, float | None]:
    """The store on the configured database, and ``[tui] refresh_s`` (None: off). Raises
    ``StepLineError`` (``ConfigError``, ``StorageError``) with a message saying what to fix."""
    from steps.settings import load_settings
    from storage.db import open_engine
    from storage.store import Store

    settings = load_settings()
    return Store(open_engine(settings.database_url)), settings.tui.refresh_s or None


def run() -> int:
    """``stepline tui``: paint the first rows, then open the store; the exit code.

    Bad input (a URL, path or catalog that cannot be used) is one line on stderr and 2, before
    the app starts or, when found just after the first paint, once it has closed.
    """
    from stepline.errors import StepLineError
    from tui import actions
    from tui.app import StepLineApp
    from tui.screens.instances import PAGE

    try:
        quick = first_page(PAGE)
        if quick is None:  # PostgreSQL, a new or older file...: the store first, as for any command
            store, refresh_s = open_store()
            where = store.engine.url.render_as_string(hide_password=True)
            shown = StepLineApp(store, where=where, warm=True, refresh_s=refresh_s)
        else:
            where, rows = quick
            shown = StepLineApp(where=where, warm=True, first_page=rows, open_store=open_store)
    except StepLineError as exc:
        return _fail(exc.message)
    try:
        shown.run()
    finally:
        actions.shutdown()
    if shown.failed_to_open is not None:  # found after the first paint: the same line, the same code
        return _fail(shown.failed_to_open)
    return 0


def _fail(message: str) -> int:
    """The CLI's one line for bad input (``stepline.cli._fail``), without loading typer for it."""
    from rich.console import Console
    from rich.markup import escape

    from stepline.untrusted import for_terminal

    shown = escape(for_terminal(message))
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {shown}")
    return 2
