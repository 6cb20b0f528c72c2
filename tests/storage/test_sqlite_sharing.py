"""SQLite shared by several processes: no process loses a commit to another's open-and-close.

On POSIX, closing any descriptor of a file drops every lock the process holds
on it. A process that opened the database file outside SQLite (to set its mode)
each time it opened an engine held no lock afterwards; another process closing
its last connection then checkpointed and deleted ``-wal`` under it, and the
first process's later commits vanished. Checked from outside, as an operator
would meet it: a writer process, a reader that comes and goes, a fresh reader.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys
    from storage.db import open_engine
    from storage.store import Store

    url = sys.argv[1]
    first = Store(open_engine(url))   # the runtime's store
    second = Store(open_engine(url))  # and the TUI's (or a second command's) in the same process
    first.create_instance("w", {"n": 0}, "ana")
    print("opened", flush=True)
    sys.stdin.readline()              # another process opens and closes the database meanwhile
    for n in range(1, 21):
        (first if n % 2 else second).create_instance("w", {"n": n}, "ana")
    print("written", flush=True)
    sys.stdin.readline()              # hold the database open while a fresh reader looks
    """
)


READ_ONCE = textwrap.dedent(
    """
    import sqlite3, sys
    connection = sqlite3.connect(sys.argv[1])
    print(connection.execute("select count(*) from workflow_instance").fetchone()[0])
    connection.close()
    """
)


def count(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("select count(*) from workflow_instance").fetchone()[0])


def test_commits_survive_another_process_opening_and_closing_the_database(tmp_path: Path) -> None:
    path = tmp_path / "stepline.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, f"sqlite:///{path}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as writer:
        assert writer.stdin is not None
        assert writer.stdout is not None
        try:
            assert writer.stdout.readline().strip() == "opened"
            # `stepline instances` in another terminal: opens, reads, closes its last connection.
            subprocess.run([sys.executable, "-c", READ_ONCE, str(path)], check=True, env=env)
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "written"

            assert Path(f"{path}-wal").exists()  # the writer still has it open: its WAL is intact
            fresh = subprocess.run(
                [sys.executable, "-c", READ_ONCE, str(path)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            assert int(fresh.stdout) == 21  # every commit, seen by a process that was not there
        finally:
            writer.stdin.write("\n")
            writer.stdin.close()
            writer.wait(timeout=30)
    assert writer.returncode == 0
    assert count(path) == 21  # and after the writer is gone


def test_a_hard_linked_database_is_refused_under_either_name(tmp_path: Path) -> None:
    """Two names give two -wal files for one database: commits under one are lost to the other."""
    from storage.db import StorageError, open_engine
    from storage.store import Store

    Store(open_engine(f"sqlite:///{tmp_path / 'a.db'}")).close()
    os.link(tmp_path / "a.db", tmp_path / "b.db")

    for name, other in (("a.db", "b.db"), ("b.db", "a.db")):
        with pytest.raises(StorageError) as caught:
            open_engine(f"sqlite:///{tmp_path / name}")
        assert caught.value.message.startswith(f"database file {tmp_path / name} has 2 hard links")
        assert f"also named {other} in {tmp_path}" in caught.value.message


def test_sqlites_disk_io_error_on_a_second_name_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linked after the check looked (or in a process holding both names): SQLite's own reason is
    "disk I/O error", and the message names the hard link instead."""
    import storage.db
    from storage.db import StorageError, open_engine
    from storage.store import Store

    first = Store(open_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    try:
        first.create_instance("w", {"n": 1}, "ana", worker="w")  # a connection stays open, -shm too
        os.link(tmp_path / "a.db", tmp_path / "b.db")
        monkeypatch.setattr(storage.db, "check_sqlite_file", lambda database: None)
        with pytest.raises(StorageError, match="has 2 hard links") as caught:
            open_engine(f"sqlite:///{tmp_path / 'b.db'}")
        assert "server is running" not in caught.value.message
    finally:
        first.close()
