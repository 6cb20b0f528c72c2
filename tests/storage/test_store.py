"""The store on SQLite and on PostgreSQL: migrations, durable attempts, prompt versions."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from storage.db import HEAD_REVISION, StorageError, alembic_config, open_engine, release_engine, upgrade
from storage.models import Attempt, InstanceStatus, NewStepRun, Notification, StepRunStatus
from storage.store import Fence, LeaseLost, Store
from tests.databases import database_url, postgres_rows, sqlite_rows


def schema(engine: Engine) -> dict[str, Any]:
    """Every table's columns, indexes and constraints, and the Alembic revision."""
    found: dict[str, Any] = {}
    inspector = inspect(engine)
    for table in sorted(inspector.get_table_names()):
        found[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "indexes": sorted(
                (i["name"] or "", tuple(i["column_names"])) for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (tuple(k["constrained_columns"]), k["referred_table"])
                for k in inspector.get_foreign_keys(table)
            ),
        }
    with engine.connect() as connection:
        found["revision"] = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    return found


def test_migrations_create_every_table(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"workflow_instance", "step_run", "attempt", "prompt_version", "alembic_version"} <= tables


def test_migrating_twice_changes_nothing(store: Store) -> None:
    before = schema(store.engine)

    upgrade(store.engine)  # the check every process makes when it opens the database

    assert schema(store.engine) == before
    assert before["revision"] == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert before["revision"] == HEAD_REVISION, "storage.db.HEAD_REVISION must name the newest migration"


def test_instance_step_run_and_attempts_round_trip(store: Store) -> None:
    instance = store.create_instance("contract-review", {"title": "t", "text": "x" * 30}, "ana", worker="w")
    fence = Fence(instance.id, instance.fence)
    version = store.prompt_version("extract", "sys", "user $text", "h1", "ana")
    assert store.prompt_version("extract", "sys", "user $text", "h1", "ana") == version
    run = NewStepRun(instance_id=instance.id, step="extract", index=0, input={"text": "x"})
    raw = '{"clauses": [ {"id": 1,}'  # invalid JSON, kept byte-for-byte
    attempt_id = store.start_attempt(
        fence,
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
        ),
        step_run=run,
        schema={"type": "object", "title": "Clauses"},
    )
    store.finish_attempt(
        fence,
        attempt_id,
        raw_output=raw,
        failure_class="schema_invalid",
        validation_errors=[{"path": "$", "message": "Invalid JSON", "input": raw}],
        tokens_in=10,
        tokens_out=5,
        cost_usd=0.001,
        latency_ms=12.5,
        finished_at=datetime.now(UTC),
    )
    store.finish_step_run(fence, run.id, StepRunStatus.FAILED, attempts=1, failure_class="schema_invalid")
    store.finish_instance(fence, InstanceStatus.FAILED, failed_step="extract", failure_class="schema_invalid")

    detail = store.instance_detail(instance.id)
    assert detail is not None
    assert detail.instance.status == "failed"
    assert detail.step_runs[0].status == "failed"
    (attempt,) = detail.attempts
    assert attempt.raw_output == raw
    assert attempt.validation_errors == [{"path": "$", "message": "Invalid JSON", "input": raw}]
    assert attempt.sampling == {"temperature": 0.0, "top_p": 1.0}
    assert store.schema(attempt.schema_hash) == {"type": "object", "title": "Clauses"}
    assert store.count_attempts(instance.id) == 1
    assert [i.id for i in store.list_instances(status="failed")] == [instance.id]
    assert store.find_instance(instance.id[:8])[0].id == instance.id


def test_a_new_step_run_is_written_with_its_first_request_or_with_its_end(store: Store) -> None:
    """The engine's path: a step run as plain values (``NewStepRun``), never a model object."""
    instance = store.create_instance("contract-review", {"n": 1}, "ana", worker="w")
    fence = Fence(instance.id, instance.fence)
    version = store.prompt_version("extract", "sys", "user", "h1", "ana")
    asked = NewStepRun(instance_id=instance.id, step="extract", index=0, input={"text": "x"}, generation=2)
    attempt_id = store.start_attempt(fence, attempt(instance.id, asked.id, version, 1), step_run=asked)
    store.finish_step_run(
        fence,
        asked.id,
        StepRunStatus.COMPLETED,
        attempts=1,
        model_id="m",
        output={"ok": True},
        last_attempt=(attempt_id, {"raw_output": "{}", "finished_at": datetime.now(UTC)}),
    )
    never_asked = NewStepRun(instance_id=instance.id, step="assess", index=0, input={"text": "y"})
    store.finish_step_run(
        fence, never_asked.id, StepRunStatus.FAILED, attempts=0, failure_class="quota", insert=never_asked
    )

    detail = store.instance_detail(instance.id)
    assert detail is not None
    runs = {run.step: run for run in detail.step_runs}
    assert (runs["extract"].status, runs["extract"].generation, runs["extract"].input) == (
        "completed",
        2,
        {"text": "x"},
    )
    assert (runs["extract"].output, runs["extract"].model_id, runs["extract"].attempts) == (
        {"ok": True},
        "m",
        1,
    )
    assert runs["extract"].started_at is not None
    assert runs["extract"].finished_at is not None
    assert (runs["assess"].status, runs["assess"].failure_class, runs["assess"].input) == (
        "failed",
        "quota",
        {"text": "y"},
    )
    (stored,) = detail.attempts
    assert (stored.step_run_id, stored.raw_output) == (asked.id, "{}")


def test_a_stale_token_writes_nothing(store: Store) -> None:
    """After a hand-over (recovery, then a replay's claim) the old token is refused everywhere."""
    instance = store.create_instance("contract-review", {"n": 1}, "ana", worker="frozen:1:aaaaaa")
    stale = Fence(instance.id, instance.fence)
    version = store.prompt_version("extract", "sys", "user", "h1", "ana")
    run = NewStepRun(instance_id=instance.id, step="extract", index=0)
    in_flight = store.start_attempt(stale, attempt(instance.id, run.id, version, 1), step_run=run)

    assert (
        store.recover_lost(
            instance.id, fence=stale.token, heartbeat_at=None, failure_class="worker_lost", error="lost"
        )
        is False
    )  # it renewed since: the heartbeat judged stale was None, and writes renew it
    seen = store.get_instance(instance.id)
    assert seen is not None
    assert store.recover_lost(
        instance.id,
        fence=seen.fence,
        heartbeat_at=seen.heartbeat_at,
        failure_class="worker_lost",
        error="lost",
    )
    claim = store.claim_for_replay(instance.id, allow_completed=False, worker="replayer:2:bbbbbb")
    assert claim is not None
    assert claim.fence.token > stale.token

    refused: list[Callable[[], object]] = [
        lambda: store.start_attempt(stale, attempt(instance.id, run.id, version, 2)),
        lambda: store.finish_attempt(stale, in_flight, failure_class=None, finished_at=datetime.now(UTC)),
        lambda: store.finish_step_run(stale, run.id, StepRunStatus.COMPLETED, attempts=1, output={"a": 1}),
        lambda: store.finish_instance(stale, InstanceStatus.COMPLETED, output={"stale": True}),
        lambda: store.set_flow_run(stale, "flow-run"),
        lambda: store.supersede_from(stale, "extract"),
        lambda: store.check_lease(stale),
        lambda: store.add_notification(
            Notification(instance_id=instance.id, event="paused", target="x", title="t", body="b"), stale
        ),
    ]
    for write in refused:
        with pytest.raises(LeaseLost):
            write()
    assert store.heartbeat("frozen:1:aaaaaa", {instance.id: stale.token}) == set()

    detail = store.instance_detail(instance.id)
    assert detail is not None
    assert (detail.instance.status, detail.instance.output, detail.instance.worker) == (
        "running",
        None,
        "replayer:2:bbbbbb",
    )
    assert [(r.status, r.failure_class) for r in detail.step_runs] == [("failed", "worker_lost")]
    assert [(a.attempt_number, a.failure_class) for a in detail.attempts] == [(1, "worker_lost")]
    assert store.notifications(instance.id) == []

    # The frozen worker's late answer is kept for audit on its own row, and applied nowhere.
    assert store.record_late_answer(in_flight, 0, {"raw_output": '{"late": 1}', "tokens_in": 3})
    (late,) = store.instance_detail(instance.id).attempts  # type: ignore[union-attr]
    assert (late.failure_class, late.raw_output, late.tokens_in) == ("superseded", '{"late": 1}', 3)
    assert store.heartbeat("replayer:2:bbbbbb", {instance.id: claim.fence.token}) == {instance.id}


def attempt(instance_id: str, run_id: str, version: str, number: int) -> Attempt:
    return Attempt(
        instance_id=instance_id,
        step_run_id=run_id,
        step="extract",
        attempt_number=number,
        provider="openai",
        model_id="m",
        provider_model="gpt",
        prompt_version_id=version,
    )


def test_sqlite_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    release_engine(open_engine(f"sqlite:///{path}"))
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


@pytest.fixture
def postgres_store(tmp_path: Path) -> Iterator[tuple[Store, str]]:
    with database_url("postgresql", tmp_path) as url:
        store = Store(open_engine(url))
        yield store, url
        store.close()


def test_a_connection_lost_as_a_write_commits_is_written_once_on_the_next_try(
    postgres_store: tuple[Store, str],
) -> None:
    """The backend dies during COMMIT (a deferred trigger terminates it), so nothing was stored;
    the retry on a new connection must insert the rows, not take leftovers of the failed
    try for stored rows."""
    store, url = postgres_store
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE commits_seen")
        conn.execute(
            "CREATE FUNCTION die_at_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval('commits_seen') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; "
            "RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER die_at_first_commit AFTER INSERT ON attempt "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_first_commit()"
        )
    instance = store.create_instance("contract-review", {"n": 1}, "ana", worker="w")
    fence = Fence(instance.id, instance.fence)
    version = store.prompt_version("extract", "sys", "user", "h1", "ana")
    run = NewStepRun(instance_id=instance.id, step="extract", index=0)

    attempt_id = store.start_attempt(fence, attempt(instance.id, run.id, version, 1), step_run=run)
    store.finish_step_run(fence, run.id, StepRunStatus.COMPLETED, attempts=1, output={"ok": True})

    detail = store.instance_detail(instance.id)
    assert detail is not None
    assert [(r.id, r.status) for r in detail.step_runs] == [(run.id, "completed")]
    assert [a.id for a in detail.attempts] == [attempt_id]
    assert postgres_rows(url, "select last_value from commits_seen") == [(2,)]  # died once, then stored


def test_the_schema_migration_moves_each_copied_schema_to_one_stored_row(tmp_path: Path) -> None:
    """A database from before 0008 keeps every attempt's schema, now stored once and referenced."""
    from alembic import command
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    config = alembic_config()
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        connection.execute(
            text(
                "INSERT INTO workflow_instance (id, workflow, input, status, owner, generation, fence, "
                "created_at, updated_at) "
                "VALUES ('i1', 'w', '{}', 'failed', 'ana', 0, 0, '2026-01-01', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO prompt_version (id, step, content_hash, system, template, author, created_at) "
                "VALUES ('p1', 's', 'h', 'sys', 'user', 'ana', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                'INSERT INTO step_run (id, instance_id, step, "index", generation, status, attempts, '
                "started_at) VALUES ('r1', 'i1', 's', 0, 0, 'failed', 3, '2026-01-01')"
            )
        )
        for n, schema in enumerate(['{"title": "A"}', '{"title": "A"}', None], start=1):
            connection.execute(
                text(
                    "INSERT INTO attempt (id, instance_id, step_run_id, step, attempt_number, provider, "
                    "model_id, provider_model, prompt_version_id, expected_schema, started_at) VALUES "
                    "(:id, 'i1', 'r1', 's', :n, 'openai', 'm', 'gpt', 'p1', :schema, '2026-01-01')"
                ),
                {"id": f"a{n}", "n": n, "schema": schema},
            )
    old.dispose()

    store = Store(open_engine(url))  # migrates to the newest revision
    try:
        attempts = {a.id: a for a in store.instance_detail("i1").attempts}  # type: ignore[union-attr]
        assert attempts["a1"].schema_hash == attempts["a2"].schema_hash is not None
        assert attempts["a3"].schema_hash is None
        assert store.schema(attempts["a1"].schema_hash) == {"title": "A"}
        assert sqlite_rows(tmp_path / "old.db", "select count(*) from output_schema") == [(1,)]
        assert "expected_schema" not in {c["name"] for c in inspect(store.engine).get_columns("attempt")}
    finally:
        store.close()
