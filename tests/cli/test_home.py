"""Nothing of a run outside Stepline's home (issue 28, item 4), as a user's failing runs leave it.

A fresh HOME with no STEPLINE_HOME, XDG_DATA_HOME or Prefect setting: Stepline's home is then
~/.local/share/stepline and the first command starts its own local Prefect server there
(10-20 s, once). Real `stepline run` processes fail against a loopback OpenAI server; then
every path under HOME is listed with its mode.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import ROOT, SAMPLE, no_traceback
from tests.servers import OpenAIServer, error, invalid_json, refusal

SECRET = "sk-test-secret-4d6f"
PERSONAL = '{"clauses": "Jane Roe, IBAN DE89 3704 0044 0532 0130 00"'
"""A model's answer with a name and an IBAN in it, cut off: a schema failure keeps it as raw output."""

CATALOG = """
[retry]
base_delay_s = 0.01
max_delay_s = 0.05

[providers.cloud]
kind = "openai"
base_url = "{base_url}"
api_key_env = "OPENAI_API_KEY"
timeout_s = 10.0

[models.small]
provider = "cloud"
model = "gpt-small"
tier = "cheap"
"""


def modes(root: Path) -> dict[str, str]:
    """Every path under ``root`` (relative) with its permission bits, e.g. ``{"a/b": "0o600"}``."""
    return {str(path.relative_to(root)): oct(stat.S_IMODE(path.lstat().st_mode)) for path in root.rglob("*")}


def prefect_processes(home: Path) -> dict[int, list[bytes]]:
    """Live processes running Prefect with this HOME: the local server (and any child), their environ."""
    mark = f"HOME={home}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            words = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if mark in environ and b"prefect" in words:
            found[int(proc.name)] = environ
    return found


@pytest.fixture
def user(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a user whose HOME is fresh; the server it starts is stopped afterwards."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_", "XDG_", "OPENAI_"))
    }
    env.update(HOME=str(home), OPENAI_API_KEY=SECRET, PYTHONPATH=str(ROOT))
    yield env
    subprocess.run(
        [sys.executable, "-m", "stepline", "server", "stop"], env=env, capture_output=True, timeout=60
    )
    for pid in prefect_processes(home):  # stop failed: leave nothing running all the same
        os.killpg(pid, 9)


def test_failing_runs_leave_nothing_outside_stepline_home_and_nothing_readable_by_others(
    user: dict[str, str], openai_server: OpenAIServer
) -> None:
    home = Path(user["HOME"])
    work = home / "work"  # the user's project: its database is Stepline's too
    work.mkdir()
    (work / "stepline.toml").write_text(CATALOG.format(base_url=openai_server.base_url))
    before = set(modes(home))

    def run() -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "stepline", "run", "contract-review", "--input", str(SAMPLE)],
            cwd=work,
            env=user,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        no_traceback(result)
        return result

    for reply, outcome in (
        (invalid_json(PERSONAL), "schema_invalid"),  # a schema failure holding personal data
        (error(500), "paused"),  # the provider failing: StepFailed raised in the flow
        (refusal(), "refused"),
    ):
        openai_server.default = reply
        failed = run()
        assert failed.returncode != 0, failed.stderr
        assert outcome in failed.stderr, failed.stderr
    openai_server.reset_script()

    stepline_home = home / ".local" / "share" / "stepline"
    state = json.loads((stepline_home / "prefect-server" / "state.json").read_text())
    made = {path: mode for path, mode in modes(home).items() if path not in before}

    # Where: Stepline's home (and the XDG folders above it), the project's database, and
    # Prefect's own config folder, which importing Prefect makes (0700) and which stays empty.
    allowed_dirs = {".local", ".local/share", ".prefect"}
    outside = {
        path
        for path in made
        if not path.startswith(".local/share/stepline")
        and path not in allowed_dirs
        and not path.startswith("work/stepline.db")
    }
    assert outside == set(), made
    assert not list((home / ".prefect").iterdir())  # no storage/, no pickled exception
    assert {".local/share/stepline/prefect-server/prefect.db", "work/stepline.db"} <= set(made)
    assert not list((stepline_home / "prefect-results").iterdir())  # no failure record kept either

    # How: folders 0700, files 0600.
    wrong = {
        path: mode for path, mode in made.items() if mode != ("0o700" if (home / path).is_dir() else "0o600")
    }
    assert wrong == {}, made

    # The server outlives these commands: it holds no provider key.
    servers = prefect_processes(home)
    assert state["pid"] in servers
    for environ in servers.values():
        assert not [v for v in environ if SECRET.encode() in v or v.startswith(b"OPENAI_API_KEY=")]
