"""Time from process start to the first rows on screen: `stepline tui` against a bare Textual app.

Why: the operator opens the TUI to look at failures, often many of them. Whatever the TUI does
before its first rows show (imports, settings, opening the store, the migration check) is
waiting time; a bare Textual app that shows the same 200 rows is the floor it is held to
(issue 18's target: at most 1.3x).

What it measures, over one SQLite file seeded with 100,000 failed instances (as
``bench/tui_scale.py`` seeds them), each variant a fresh process on a pseudo-terminal of 80x24,
interleaved round by round:

  (a) ``bench/bare_tui.py``: Textual, a Header, a DataTable of the newest 200 instances read
      with plain ``sqlite3``, a Footer;
  (b) ``stepline tui``: the real command, through its console script, on the same database
      (``STEPLINE_DATABASE_URL``).

The clock starts just before ``Popen`` and stops when the newest instance's id (its first 8
characters, as an 80-column list shows it) comes out of the pseudo-terminal, read by this
script: *on the terminal*, the figure the target is about. Printed beside it: the CPU time the
process had used by then (all its threads, ``/proc/<pid>/stat``: steadier than the wall clock
on a shared machine), and *painted*, the ``time.monotonic()`` each process writes to
``STEPLINE_TUI_PAINTED`` once its rows are painted (``call_after_refresh``; the same clock as
this script's).

The first round is a warm-up and is not counted: files in the page cache, and every module's
bytecode compiled and cached (in the temporary folder, ``PYTHONPYCACHEPREFIX``), as it is on a
user's machine after the first start; without it, a ``PYTHONDONTWRITEBYTECODE`` environment
compiles Stepline's own modules on every start (about 70 ms here), the bare script's one file
not. Each process is killed once its rows are seen. ``PREFECT_API_URL`` points at a closed port
so that the TUI's background engine load cannot start Prefect's local server meanwhile.

Prints each run, the medians, their ratio (b)/(a) and the median of the round-by-round ratios
(each pair ran back to back, so it is less swayed by the machine's load drifting); it asserts
nothing.

    uv run python bench/tui_first_paint.py                        # 3 measured rounds
    uv run python bench/tui_first_paint.py --rounds 7 --keep /tmp/first-paint.db
    uv run python bench/tui_first_paint.py --source /tmp/before   # another version's code

``--keep FILE`` seeds FILE once and reuses it (seeding takes 20-30 s). ``--source FOLDER`` times
the Stepline code in FOLDER instead of this checkout's, e.g. an earlier commit's from
``git archive <commit> | tar -x -C FOLDER``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SIZE = (80, 24)


def seeded(path: Path, count: int) -> None:
    """``path`` holds ``count`` failed instances (seeded here unless it already does)."""
    if path.exists():
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as connection:
            (found,) = connection.execute("SELECT count(*) FROM workflow_instance").fetchone()
        connection.close()
        if found >= count:
            return
        raise SystemExit(f"{path} holds {found:,} instances, not {count:,}: remove it or pick another")
    from tui_scale import seed

    from storage.db import open_engine
    from storage.store import Store

    store = Store(open_engine(f"sqlite:///{path}"))
    seconds = seed(store, count)
    store.close()
    print(f"seeded {count:,} failed instances and attempts in {seconds:.1f} s")


def newest_id(path: Path) -> str:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        (found,) = connection.execute(
            "SELECT id FROM workflow_instance ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    finally:
        connection.close()
    return str(found)


def run_once(
    argv: list[str], env: dict[str, str], needle: bytes, cwd: Path
) -> tuple[float, float, float | None]:
    """Seconds from ``Popen`` to the needle on the terminal, the CPU seconds the process had used
    by then, and seconds to its painted mark (None if it wrote none within 5 s of the rows
    showing: a build without the mark)."""
    marker = cwd / "painted"
    marker.unlink(missing_ok=True)
    master, slave = os.openpty()
    columns, lines = SIZE
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {**env, "STEPLINE_TUI_PAINTED": str(marker), "TERM": "xterm-256color"}
    start = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 (our own interpreter, scripts and arguments)
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
    )
    os.close(slave)
    output = b""
    seen: float | None = None
    cpu = 0.0
    painted: float | None = None
    try:
        while time.monotonic() - start < 120:
            ready, _, _ = select.select([master], [], [], 0.005)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # the terminal closed: the process ended
                    chunk = b""
                if seen is None and needle in output[-len(needle) :] + chunk:
                    seen = time.monotonic()
                    cpu = _cpu_seconds(process.pid)
                output += chunk
                if not chunk and process.poll() is not None:
                    break
            if painted is None and marker.exists() and marker.read_text().endswith("\n"):
                painted = float(marker.read_text())
            if seen is not None and (painted is not None or time.monotonic() - seen > 5):
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        os.close(master)
    if seen is None:
        tail = output[-2000:].decode(errors="replace")
        raise SystemExit(f"{argv[-1]}: no rows within 120 s; its output ended with:\n{tail}")
    return seen - start, cpu, None if painted is None else painted - start


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds, after one warm-up")
    parser.add_argument("--keep", type=Path, help="a database file to seed once and reuse")
    parser.add_argument(
        "--source",
        type=Path,
        help="time `stepline tui` of the Stepline code in this folder (e.g. an older commit's, from "
        "`git archive <commit> | tar -x -C FOLDER`), put first on its PYTHONPATH",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        database = (args.keep or work / "bench.db").resolve()
        seeded(database, args.count)
        needle = newest_id(database)[:8].encode()  # the id as an 80-column list shows it
        env = {
            **os.environ,
            "STEPLINE_DATABASE_URL": f"sqlite:///{database}",
            "PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing listens: no local server started
            # Bytecode cached as on a user's machine (the warm-up round writes it), though this
            # environment may set PYTHONDONTWRITEBYTECODE; in the temporary folder, not the sources'.
            "PYTHONPYCACHEPREFIX": str(work / "pycache"),
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        ours = {**env, "PYTHONPATH": str(args.source.resolve())} if args.source else env
        variants = {
            "bare Textual + sqlite3": ([sys.executable, str(BENCH / "bare_tui.py"), str(database)], env),
            "stepline tui": ([str(Path(sys.executable).with_name("stepline")), "tui"], ours),
        }
        runs: dict[str, list[tuple[float, float, float | None]]] = {name: [] for name in variants}
        for round_ in range(args.rounds + 1):
            for name, (argv, variant_env) in variants.items():
                run = run_once(argv, variant_env, needle, work)
                label = "warm-up" if round_ == 0 else f"round {round_}"
                print(f"{label:8} {_line(name, *run)}")
                if round_:
                    runs[name].append(run)
    print(f"\nfirst rows at {SIZE[0]}x{SIZE[1]}, {args.count:,} instances, median of {args.rounds}:")
    medians = {
        name: tuple(_median(list(column)) for column in zip(*found, strict=True))
        for name, found in runs.items()
    }
    for name, median in medians.items():
        print(f"  {_line(name, *median)}")
    bare, stepline = medians.values()
    ratios = [f"{o / b:.2f}x" if o and b else "n/a" for o, b in zip(stepline, bare, strict=True)]
    seen, cpu, painted = ratios
    print(f"  {'ratio of the medians':24} on the terminal {seen:>9}  cpu {cpu:>9}  painted {painted:>9}")
    paired = [ours[0] / theirs[0] for theirs, ours in zip(*runs.values(), strict=True)]
    print(
        f"  {'ratio round by round':24} on the terminal {statistics.median(paired):.2f}x median "
        f"({', '.join(f'{ratio:.2f}' for ratio in paired)})"
    )
    print("  (target: at most 1.3x on the terminal)")


def _line(name: str, seen: float | None, cpu: float | None, painted: float | None) -> str:
    return f"{name:24} on the terminal {_ms(seen)}  cpu {_ms(cpu)}  painted {_ms(painted)}"


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if len(known) == len(values) else None


def _ms(seconds: float | None) -> str:
    return "   n/a   " if seconds is None else f"{seconds * 1000:6.0f} ms"


if __name__ == "__main__":
    main()
