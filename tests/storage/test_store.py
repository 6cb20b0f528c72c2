"""The store on SQLite and on PostgreSQL: migrations, durable attempts, prompt versions."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from storage.db import StorageError, open_engine
from storage.models import Attempt, InstanceStatus, StepRunStatus
from storage.store import Store
from tests.databases import database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_url(request.param, tmp_path) as url:
        engine = open_engine(url)
        yield Store(engine)
        engine.dispose()


def test_migrations_create_every_table(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"workflow_instance", "step_run", "attempt", "prompt_version", "alembic_version"} <= tables


def test_migrating_twice_is_a_no_op(store: Store) -> None:
    again = open_engine(store.engine.url.render_as_string(hide_password=False))
    again.dispose()


def test_instance_step_run_and_attempts_round_trip(store: Store) -> None:
    instance = store.create_instance("contract-review", {"title": "t", "text": "x" * 30}, "ana")
    version = store.prompt_version("extract", "sys", "user $text", "h1", "ana")
    assert store.prompt_version("extract", "sys", "user $text", "h1", "ana") == version
    run = store.start_step_run(instance.id, "extract", 0, {"text": "x"})
    raw = '{"clauses": [ {"id": 1,}'  # invalid JSON, kept byte-for-byte
    store.add_attempt(
        Attempt(
            instance_id=instance.id,
            step_run_id=run.id,
            step="extract",
            attempt_number=1,
            provider="openai",
            model_id="m",
            provider_model="gpt",
            prompt_version_id=version,
            sampling={"temperature": 0.0, "top_p": 1.0},
            request_messages=[{"role": "user", "content": "hi"}],
            raw_output=raw,
            expected_schema={"type": "object"},
            failure_class="schema_invalid",
            validation_errors=[{"path": "$", "message": "Invalid JSON", "input": raw}],
            tokens_in=10,
            tokens_out=5,
            cost_usd=0.001,
            latency_ms=12.5,
        )
    )
    store.finish_step_run(run.id, StepRunStatus.FAILED, attempts=1, failure_class="schema_invalid")
    store.finish_instance(
        instance.id, InstanceStatus.FAILED, failed_step="extract", failure_class="schema_invalid"
    )

    detail = store.instance_detail(instance.id)
    assert detail is not None
    assert detail.instance.status == "failed"
    assert detail.step_runs[0].status == "failed"
    (attempt,) = detail.attempts
    assert attempt.raw_output == raw
    assert attempt.validation_errors == [{"path": "$", "message": "Invalid JSON", "input": raw}]
    assert attempt.sampling == {"temperature": 0.0, "top_p": 1.0}
    assert store.count_attempts(instance.id) == 1
    assert [i.id for i in store.list_instances(status="failed")] == [instance.id]
    assert store.find_instance(instance.id[:8])[0].id == instance.id


def test_sqlite_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    open_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match=r"cannot reach database .*127\.0\.0\.1:1/.*STEPLINE_DATABASE_URL"):
        open_engine("postgresql+psycopg://someone:secret@127.0.0.1:1/none")


def test_password_never_appears_in_storage_errors() -> None:
    with pytest.raises(StorageError) as caught:
        open_engine("postgresql+psycopg://someone:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(caught.value)


def test_missing_sqlite_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_nonsense_url_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="not a valid SQLAlchemy URL"):
        open_engine("not a url")


def test_migrations_match_the_models(store: Store) -> None:
    """Fails when a model changes without a migration (autogenerate would find a diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []


def test_malformed_url_errors_do_not_echo_the_password() -> None:
    with pytest.raises(StorageError) as caught:
        open_engine("postgresql+psycopg//bob:s3cret@db/x")
    assert "s3cret" not in str(caught.value)
