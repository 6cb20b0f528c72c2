"""The shared writing connection of a SQLite store: what it acknowledged survives, seen from outside.

A process's threads write steps through one connection kept open between writes
(``storage/sqlite_writer.py``). Checked the way an operator meets it: a writer
process records attempts from several threads while another process reads and
closes the file, the writer is SIGKILLed mid-stream, and a fresh process counts
the rows. Plus the writer's own rules: an error drops the connection, a write
inside a write gets one of its own, and ``release_engine`` closes it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import open_engine, release_engine
from storage.models import Attempt, NewStepRun
from storage.sqlite_writer import sqlite_writer
from storage.store import Fence, Store

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys, threading
    from storage.db import open_engine
    from storage.models import Attempt, NewStepRun
    from storage.store import Fence, Store

    store = Store(open_engine(sys.argv[1]))
    instance = store.create_instance("w", {"n": 0}, "ana", worker="w1")
    fence = Fence(instance.id, instance.fence)
    version = store.prompt_version("s", "system", "user", "h1", "ana")
    print_lock = threading.Lock()

    def record(thread: int) -> None:
        for n in range(10_000):
            run = NewStepRun(instance_id=instance.id, step=f"s{thread}", index=n, input={"n": n})
            attempt = Attempt(instance_id=instance.id, step_run_id=run.id, step=run.step,
                              attempt_number=1, provider="p", model_id="m", provider_model="m",
                              prompt_version_id=version)
            attempt_id = store.start_attempt(fence, attempt, step_run=run)
            with print_lock:
                print(attempt_id, flush=True)  # acknowledged: the commit returned

    for thread in range(4):
        threading.Thread(target=record, args=(thread,), daemon=True).start()
    threading.Event().wait()
    """
)


def read_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as connection:
        return {row[0] for row in connection.execute("select id from attempt")}


def test_every_acknowledged_attempt_survives_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "stepline.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acknowledged: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, f"sqlite:///{path}"], stdout=subprocess.PIPE, text=True, env=env
    ) as writer:
        assert writer.stdout is not None
        try:
            while len(acknowledged) < 400:
                line = writer.stdout.readline().strip()
                assert line, "the writer stopped before it was killed"
                acknowledged.append(line)
                if len(acknowledged) == 200:  # another process reads and closes the file meanwhile
                    assert len(read_ids(path)) >= 200
        finally:
            writer.send_signal(signal.SIGKILL)
            rest, _ = writer.communicate(timeout=30)
    acknowledged.extend(line for line in rest.splitlines() if line)
    stored = read_ids(path)  # a fresh process's view, after the crash
    assert len(acknowledged) >= 400
    assert set(acknowledged) <= stored  # every acknowledged commit is there
    assert len(stored - set(acknowledged)) <= 4  # committed but not yet printed: one per thread at most


def test_a_failed_write_drops_the_connection_and_the_next_one_works(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'stepline.db'}")
    try:
        writer = sqlite_writer(engine)
        assert writer is not None
        with engine.begin() as setup:
            setup.execute(text("create table scratch (x integer)"))
        with writer.lock, writer.connect(engine) as first:
            first.execute(text("select 1"))

        def failing_write() -> None:
            with writer.connect(engine) as broken:
                assert broken is first  # kept open between writes
                broken.execute(text("insert into scratch (x) values (1)"))  # not committed
                raise RuntimeError("the write failed")

        with writer.lock, pytest.raises(RuntimeError, match="the write failed"):
            failing_write()
        assert first.closed
        with writer.lock, writer.connect(engine) as after:
            assert after is not first
            rows = after.execute(text("select count(*) from scratch")).scalar()
            assert rows == 0  # what the failed write left uncommitted was rolled back
            with writer.connect(engine) as nested:  # a write inside a write: its own connection
                assert nested is not after
    finally:
        release_engine(engine)


def test_releasing_the_engine_closes_the_writing_connection(tmp_path: Path) -> None:
    store = Store(open_engine(f"sqlite:///{tmp_path / 'stepline.db'}"))
    instance = store.create_instance("w", {"n": 0}, "ana", worker="w1")
    version = store.prompt_version("s", "system", "user", "h1", "ana")
    run = NewStepRun(instance_id=instance.id, step="s", index=0, input={})
    attempt = Attempt(
        instance_id=instance.id,
        step_run_id=run.id,
        step="s",
        attempt_number=1,
        provider="p",
        model_id="m",
        provider_model="m",
        prompt_version_id=version,
    )
    store.start_attempt(Fence(instance.id, instance.fence), attempt, step_run=run)
    pool = store.engine.pool
    assert pool.checkedout() == 1  # type: ignore[attr-defined]  # the writer's, kept open
    store.close()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]  # nothing left for the GC to close
