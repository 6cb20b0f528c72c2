"""`stepline tui` paints its first rows before SQLAlchemy, the settings or Prefect load.

The first page comes from ``storage.quick_read`` (stdlib ``sqlite3``), the database URL from
``tui.start.database_url`` (the settings' own reading, without pydantic-settings); the store
opens in a worker after the paint. These tests hold the light readings equal to the heavy
ones, keep the heavy modules off the way to the first paint, and check that bad input still
ends in one line and exit code 2, before or after the paint.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from textual.widgets import DataTable

from stepline.errors import StepLineError
from steps.settings import DEFAULT_CATALOG, load_settings
from storage.models import WorkflowInstance, as_utc
from storage.quick_read import HEAD_REVISION, InstanceRow, newest_instances, sqlite_path
from storage.store import Store
from tests.tui.seed import seeded
from tui import start
from tui.app import StepLineApp
from tui.screens.instance import InstanceScreen
from tui.screens.instances import PAGE, InstancesScreen, fit, natural_widths

ROOT = Path(__file__).resolve().parents[2]
HEADLESS = "textual.drivers.headless_driver:HeadlessDriver"
"""``TEXTUAL_DRIVER``: the app runs in a subprocess without a terminal."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """The snapshot store, and newer instances whose text needs care (markup, a control code)."""
    for store in seeded(tmp_path):
        store.create_instance("file-invoice", {"n": 1}, "bo", source="inbox/[bold]x.json")
        store.create_instance("file-invoice", {"n": 2}, "bo", source="batch.jsonl:12\x1b[31m")
        yield store


def database(store: Store) -> Path:
    path = sqlite_path(store.engine.url.render_as_string(hide_password=False))
    assert path is not None
    return path


def test_the_first_page_read_with_sqlite3_is_the_store_s(store: Store) -> None:
    quick = newest_instances(database(store), PAGE)
    slow = store.search_instances(limit=PAGE)
    assert quick is not None
    assert len(quick) == len(slow) == 5
    for light, full in zip(quick, slow, strict=True):
        assert light[:-1] == tuple(getattr(full, field) for field in InstanceRow._fields[:-1])
        assert light.created_at == as_utc(full.created_at)


def test_the_quick_reader_reads_only_columns_of_the_instance_table() -> None:
    columns = set(WorkflowInstance.__table__.columns.keys())  # type: ignore[attr-defined]
    assert set(InstanceRow._fields) <= columns


@pytest.mark.parametrize("damage", ["older revision", "not a database", "empty file", "no such file"])
def test_the_quick_reader_leaves_to_the_store_what_only_it_may_open(
    store: Store, tmp_path: Path, damage: str
) -> None:
    """Anything but a Stepline database at the newest revision is the store's to create,
    migrate or refuse with its message."""
    path = database(store)
    store.close()
    if damage == "older revision":
        with closing(sqlite3.connect(path)) as connection, connection:
            connection.execute("UPDATE alembic_version SET version_num = '0001'")
    elif damage == "not a database":
        path = tmp_path / "notes.db"
        path.write_text("not SQLite\n" * 100)
    elif damage == "empty file":
        path = tmp_path / "empty.db"
        path.touch()
    else:
        path = tmp_path / "missing.db"
    assert newest_instances(path, PAGE) is None
    assert damage != "no such file" or not path.exists()  # read-only: never created here


def test_the_newest_revision_is_named_once() -> None:
    from storage import db

    assert db.HEAD_REVISION == HEAD_REVISION


@pytest.mark.parametrize(
    ("url", "plain"),
    [
        ("sqlite:///stepline.db", True),
        ("sqlite:////var/lib/stepline/stepline.db", True),
        ("sqlite://", False),
        ("sqlite:///:memory:", False),
        ("sqlite:///stepline.db?mode=ro", False),
        ("sqlite:///a%20b.db", False),
        ("sqlite+pysqlite:///stepline.db", False),
        ("postgresql+psycopg://user@127.0.0.1:5432/stepline", False),
        ("", False),
    ],
)
def test_only_plain_sqlite_file_urls_are_read_without_the_store(url: str, plain: bool) -> None:
    path = sqlite_path(url)
    assert (path is not None) == plain
    if path is not None:
        assert path.is_absolute()


CATALOG = DEFAULT_CATALOG.read_text()


@pytest.mark.parametrize(
    "setup",
    ["default", "environment", "environment, any case", "STEPLINE_CONFIG", "./stepline.toml", "both"],
)
def test_the_database_url_is_read_as_the_settings_read_it(
    setup: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [key for key in os.environ if key.upper() in ("STEPLINE_DATABASE_URL", "STEPLINE_CONFIG")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    if setup in ("environment", "both"):
        monkeypatch.setenv("STEPLINE_DATABASE_URL", "sqlite:///from-env.db")
    if setup == "environment, any case":
        monkeypatch.setenv("Stepline_Database_Url", "sqlite:///from-env.db")
    if setup in ("STEPLINE_CONFIG", "both"):
        catalog = tmp_path / "elsewhere.toml"
        catalog.write_text(f'database_url = "sqlite:///from-config.db"\n{CATALOG}')
        monkeypatch.setenv("STEPLINE_CONFIG", str(catalog))
    if setup == "./stepline.toml":
        (tmp_path / "stepline.toml").write_text(f'database_url = "sqlite:///from-local.db"\n{CATALOG}')
    assert start.database_url() == load_settings().database_url


@pytest.mark.parametrize(
    "catalog",
    ['database_url = "x\n', "database_url = 5\n", None],
    ids=["not TOML", "not a string", "missing"],
)
def test_a_catalog_the_light_reading_cannot_use_is_left_to_the_settings(
    catalog: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEPLINE_DATABASE_URL", raising=False)
    path = tmp_path / "catalog.toml"
    if catalog is not None:
        path.write_text(catalog)
    monkeypatch.setenv("STEPLINE_CONFIG", str(path))
    assert start.database_url() is None
    with pytest.raises(StepLineError):  # which says what is wrong, before the app starts
        load_settings()


def test_the_columns_fit_80_columns_and_widen_with_the_terminal(store: Store) -> None:
    natural = natural_widths(store.search_instances(limit=PAGE))
    for width, shown in [
        (60, ["id", "workflow", "status", "step", "failure"]),
        (80, ["id", "workflow", "status", "step", "failure", "source"]),
        (160, ["id", "workflow", "status", "step", "failure", "source", "created", "error"]),
    ]:
        columns = fit(natural, width)
        assert [key for key, _ in columns] == shown
        assert sum(column_width + 2 for _, column_width in columns) + 2 <= width  # + the scrollbar


def test_the_list_shows_the_source_file_and_refits_on_resize(store: Store) -> None:
    async def scenario() -> None:
        app = StepLineApp(store)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.screen.query_one("#instances", DataTable)
            keys = [column.value for column in table.columns]
            assert keys == ["id", "workflow", "status", "step", "failure", "source"]
            sources = [str(table.get_row_at(row)[5]) for row in range(table.row_count)]
            assert sources[0] == "batch.jsonl:12\\x1b[31m"  # spelled out, never sent to the terminal
            assert sources[1] == "[bold]x.json"  # markup stays text
            assert "contract-review.json" in sources
            await pilot.press("down", "down")
            at = list(table.rows)[table.cursor_row].value
            assert at is not None

            await pilot.resize_terminal(160, 48)
            await pilot.pause(InstancesScreen.REFIT_AFTER_S * 3)
            keys = [column.value for column in table.columns]
            assert keys == ["id", "workflow", "status", "step", "failure", "source", "created", "error"]
            assert list(table.rows)[table.cursor_row].value == at  # the cursor stayed on its instance
            assert str(table.get_row(at)[0]) == at[:12]

    asyncio.run(scenario())


def test_the_list_opens_before_the_store_and_keys_wait_for_it(store: Store) -> None:
    """Before the store is open the first page is shown; a key that needs the store (enter)
    runs once it is; the list then refreshes on its own at the settings' interval."""
    first = newest_instances(database(store), PAGE)
    assert first is not None
    release = threading.Event()

    def open_store() -> tuple[Store, float | None]:
        release.wait(30)
        return store, 0.3

    async def scenario() -> None:
        app = StepLineApp(where="sqlite:///seeded", first_page=first, open_store=open_store)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, InstancesScreen)
            table = screen.query_one("#instances", DataTable)
            assert table.row_count == 5
            assert app.store is None
            await pilot.press("enter")  # needs the store: waits for it
            await pilot.pause()
            assert app.screen is screen

            release.set()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.store is store
            assert app.refresh_s == 0.3
            assert isinstance(app.screen, InstanceScreen)
            assert app.screen.instance_id == first[0].id
            assert screen.live

    asyncio.run(scenario())


def test_settings_found_wrong_after_the_first_paint_end_the_app_with_their_line(store: Store) -> None:
    first = newest_instances(database(store), PAGE)
    assert first is not None

    def open_store() -> tuple[Store, float | None]:
        raise StepLineError("stepline.toml: invalid configuration: models.x.provider: unknown")

    async def scenario() -> None:
        app = StepLineApp(where="sqlite:///seeded", first_page=first, open_store=open_store)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert app.return_code == 2
        assert app.failed_to_open == "stepline.toml: invalid configuration: models.x.provider: unknown"

    asyncio.run(scenario())


def run_tui(folder: Path, env: dict[str, str], code: str = "") -> subprocess.CompletedProcess[str]:
    """``stepline tui`` in a subprocess, headless; ``code`` runs first (a spy, say)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
    base.update(
        TEXTUAL_DRIVER=HEADLESS,
        PREFECT_API_URL="http://127.0.0.1:9/api",  # configured, closed: no local server started
        PYTHONPATH=str(ROOT),
        **env,
    )
    script = f"import sys\nsys.argv = ['stepline', 'tui']\n{code}\nfrom stepline.launch import main\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SPY = """
import json, os
from tui.app import StepLineApp
opening = StepLineApp._opening
def spy(app):
    with open(os.environ["SPY_TO"], "w") as out:
        json.dump(sorted(sys.modules), out)
    app.call_from_thread(app.exit)
StepLineApp._opening = spy
"""


def test_nothing_heavy_loads_before_the_first_paint(store: Store, tmp_path: Path) -> None:
    """The worker that opens the store is started once the rows are painted: what is loaded
    when it starts is what the first paint needed. The painted mark is written by then."""
    spied, painted = tmp_path / "modules.json", tmp_path / "painted"
    done = run_tui(
        tmp_path,
        {
            "STEPLINE_DATABASE_URL": f"sqlite:///{database(store)}",
            "STEPLINE_TUI_PAINTED": str(painted),
            "SPY_TO": str(spied),
        },
        SPY,
    )
    assert done.returncode == 0, done.stderr
    loaded = {name.split(".")[0] for name in json.loads(spied.read_text())} | set(
        json.loads(spied.read_text())
    )
    heavy = {
        "sqlalchemy",
        "sqlmodel",
        "alembic",
        "pydantic_settings",
        "prefect",
        "steps",
        "flows",
        "typer",
        "click",
    }
    assert (
        loaded & (heavy | {"openai", "anthropic", "instructor", "storage.models", "storage.store"}) == set()
    )
    assert float(painted.read_text()) > 0


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"STEPLINE_DATABASE_URL": "not a url"}, "the database URL is not a valid SQLAlchemy URL"),
        ({"STEPLINE_DATABASE_URL": "sqlite:///no/such/folder/stepline.db"}, "does not exist; create it"),
        ({"STEPLINE_DATABASE_URL": "sqlite:///."}, "is a folder; name a file in it"),
        (
            {"STEPLINE_DATABASE_URL": "postgresql+psycopg://stepline@127.0.0.1:9/stepline"},
            "cannot reach database",
        ),
        ({"STEPLINE_CONFIG": "missing.toml"}, "does not exist (from STEPLINE_CONFIG)"),
        ({"STEPLINE_CONFIG": "broken.toml"}, "not valid TOML"),
    ],
    ids=[
        "bad URL",
        "missing folder",
        "a folder",
        "unreachable PostgreSQL",
        "missing catalog",
        "broken catalog",
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_the_app(
    env: dict[str, str], says: str, tmp_path: Path
) -> None:
    (tmp_path / "broken.toml").write_text("[models.x\n")
    done = run_tui(tmp_path, env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert says in lines[0]


def test_settings_wrong_after_the_paint_are_one_line_and_exit_2(store: Store, tmp_path: Path) -> None:
    """Valid TOML that is not valid settings is found when the store opens, after the paint."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[models.x]\nprovider = "nowhere"\nmodel = "m"\ntier = "cheap"\n')
    done = run_tui(
        tmp_path, {"STEPLINE_DATABASE_URL": f"sqlite:///{database(store)}", "STEPLINE_CONFIG": str(catalog)}
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {catalog}: invalid configuration")
