"""The command's start: the cyclic collector is off while it imports, and always comes back.

Each case runs in a fresh interpreter: the collector's state is the whole process's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_startup_done_freezes_what_the_start_built_and_turns_the_collector_on() -> None:
    out = run_python(
        """
        import gc
        from stepline.launch import collector_off_while_starting, startup_done
        collector_off_while_starting(60)
        assert not gc.isenabled()
        import sqlalchemy, pydantic  # a start's long-lived objects
        startup_done()
        frozen = gc.get_freeze_count()
        startup_done()  # a second call changes nothing
        print(gc.isenabled(), frozen > 10_000, gc.get_freeze_count() == frozen)
        """
    )
    assert out.split() == ["True", "True", "True"]


def test_a_command_that_never_says_its_start_is_over_gets_the_collector_back() -> None:
    """A long-running command (serve, a batch) must not run without the collector."""
    out = run_python(
        """
        import gc, time
        from stepline.launch import collector_off_while_starting
        collector_off_while_starting(0.2)
        before = gc.isenabled()
        deadline = time.monotonic() + 10
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.02)
        print(before, gc.isenabled())
        """
    )
    assert out.split() == ["False", "True"]


def test_the_collector_is_left_alone_when_the_launcher_did_not_turn_it_off() -> None:
    out = run_python(
        """
        import gc
        from stepline.launch import collector_off_while_starting, startup_done
        startup_done()
        print(gc.isenabled(), gc.get_freeze_count())
        gc.disable()  # someone else's reasons
        collector_off_while_starting(0.05)
        startup_done()
        print(gc.isenabled(), gc.get_freeze_count())
        """
    )
    assert out.split() == ["True", "0", "False", "0"]
