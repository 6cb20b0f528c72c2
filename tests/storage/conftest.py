"""The store under test, on SQLite and on PostgreSQL, for every module of tests/storage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.db import open_engine
from storage.store import Store
from tests.databases import database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_url(request.param, tmp_path) as url:
        store = Store(open_engine(url))
        yield store
        store.close()
