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
