"""One Prefect API server per user, started by the first command that needs it, then shared.

With no Prefect server configured, Prefect starts a temporary one inside every process that
runs a flow: 10-15 s per command on 2 cores (15-37 s under load), and a command killed with
SIGKILL leaves it running with nobody knowing. Instead, the first ``stepline`` command (or TUI
action) that needs an API starts ``python -m prefect server start`` on loopback, detached in a
session of its own, with its own PREFECT_HOME, log and state file under Stepline's data folder.
Every later command, TUI action and flow reuses it; ``stepline server stop`` stops it.

That folder holds instances' inputs and outputs (the server's database has flow-run names and
states; Stepline's probes and Prefect's failure records sit beside it), so it and everything in
it are owner-only: folders 0700, files 0600. The server outlives the command that started it,
so it starts from an allow-list of the environment, never with a provider's API key.

Nothing here imports Prefect. Prefect reads PREFECT_API_URL once, when it is imported (its
global settings; ``temporary_settings`` does not reach worker threads), so the URL has to be
in the environment before that import. Health and version are asked over plain HTTP.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from steps.errors import StepLineError

__all__ = [
    "START_TIMEOUT_S",
    "Ensured",
    "ServerError",
    "ServerState",
    "Status",
    "announcement",
    "configured_api_url",
    "data_home",
    "ensure",
    "ensure_prefect_api",
    "log_path",
    "private_dir",
    "private_home",
    "server_home",
    "status",
    "stop",
    "tail",
]

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
"""A cold start takes 10-15 s here, 15-37 s on a loaded 2-core machine."""
STOP_GRACE_S = 10.0
_HEALTH_GRACE_S = 10.0
"""How long a recorded server that is alive may take to answer before it is replaced."""

_OURS: str | None = None
"""The URL this process put in PREFECT_API_URL: the local server's, not the user's setting."""
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}
"""Servers this process started: polled, so a dead one is reaped and not taken for alive."""
_LOCK = threading.Lock()


class ServerError(StepLineError):
    """The local Prefect server could not be started or stopped; the message says where to look."""


@dataclass(frozen=True)
class ServerState:
    """What the state file records about the running server."""

    pid: int
    port: int
    url: str
    prefect_version: str
    started_at: float

    @property
    def uptime_s(self) -> float:
        return max(0.0, time.time() - self.started_at)


@dataclass(frozen=True)
class Ensured:
    """The local server this process now uses; ``started`` when this call started it."""

    state: ServerState
    started: bool
    replaced: str | None = None
    """Why an earlier recorded server was replaced, if one was."""


@dataclass(frozen=True)
class Status:
    """The recorded server as ``stepline server status`` reports it."""

    condition: Literal["running", "starting", "not answering", "not running"]
    state: ServerState | None
    served_version: str | None
    configured: tuple[str, str] | None
    """(url, where it is set) when Prefect is configured to use another server."""


def data_home() -> Path:
    """Stepline's per-user data folder: $STEPLINE_HOME, else $XDG_DATA_HOME/stepline."""
    if home := os.environ.get("STEPLINE_HOME"):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "stepline"


def private_dir(path: Path) -> Path:
    """Make ``path`` and every missing folder above it owner-only (0700); return it.

    ``Path.mkdir(parents=True, mode=...)`` gives the mode to the last folder only, and the
    umask can take bits from it: the XDG spec asks for 0700 on each folder it makes.
    """
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another command
            folder.mkdir(mode=0o700)
            folder.chmod(0o700)
    return path


def private_home() -> Path:
    """``data_home()``, made (or, if an earlier Stepline made it 0755, made again) owner-only."""
    home = private_dir(data_home())
    _owner_only(home, 0o700)
    return home


def _owner_only(path: Path, mode: int) -> None:
    """Take group and other bits off ``path`` if it is ours (a folder a user named may not be)."""
    with contextlib.suppress(OSError):
        info = path.lstat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(mode)


def _open_private(path: Path, flags: int) -> int:
    """A descriptor on ``path``, a new file being made 0600 whatever the umask."""
    return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o600)


def server_home() -> Path:
    """The server's PREFECT_HOME (its own SQLite database), with its log, state and lock files."""
    return data_home() / "prefect-server"


def log_path() -> Path:
    return server_home() / "server.log"


def _state_path() -> Path:
    return server_home() / "state.json"


def _prefect_version() -> str:
    return metadata.version("prefect")  # the installed distribution, without importing it


def configured_api_url() -> tuple[str, str] | None:
    """The Prefect API this process is configured to use, and where that is set; None if none.

    Read as Prefect 3.9 reads it (``prefect.settings``: the environment, ./.env,
    ./prefect.toml, ./pyproject.toml's [tool.prefect], then the active profile), but without
    importing Prefect. If Prefect is already imported, its own settings are asked instead: they
    were fixed at import and are what its clients use.
    """
    loaded = sys.modules.get("prefect.settings")
    if loaded is not None:
        url = loaded.get_current_settings().api.url
        return (str(url), "Prefect's settings") if url and url != _OURS else None
    env = os.environ.get("PREFECT_API_URL")
    if env and env != _OURS:
        return env, "the environment (PREFECT_API_URL)"
    if env:
        return None  # ours: re-checked by ensure()
    dotenv = _dotenv("PREFECT_API_URL")
    if dotenv:
        return dotenv, "./.env"
    for path, keys in (
        (Path("prefect.toml"), ("api", "url")),
        (Path("pyproject.toml"), ("tool", "prefect", "api", "url")),
    ):
        value = _toml_value(path, keys)
        if value:
            return value, f"./{path}"
    return _profile_api_url()


def _dotenv(key: str) -> str | None:
    if not Path(".env").is_file():
        return None
    from dotenv import dotenv_values  # what Prefect's settings read .env with

    return dotenv_values(".env").get(key) or None


def _toml_value(path: Path, keys: tuple[str, ...]) -> str | None:
    try:
        value: Any = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) and value else None


def _profile_api_url() -> tuple[str, str] | None:
    """PREFECT_API_URL of the active profile (``prefect.settings.sources``'s lookup)."""
    if any(
        os.environ.get(name)
        for name in (
            "PREFECT_TEST_MODE",
            "PREFECT_UNIT_TEST_MODE",
            "PREFECT_TESTING_UNIT_TEST_MODE",
            "PREFECT_TESTING_TEST_MODE",
        )
    ):
        return None  # Prefect ignores profiles in test mode
    found = (
        os.environ.get("PREFECT_PROFILES_PATH")
        or _dotenv("PREFECT_PROFILES_PATH")
        or _toml_value(Path("prefect.toml"), ("profiles_path",))
        or _toml_value(Path("pyproject.toml"), ("tool", "prefect", "profiles_path"))
    )
    if found:
        path = Path(found).expanduser()
    elif home := os.environ.get("PREFECT_HOME"):
        path = Path(home).expanduser() / "profiles.toml"
    else:
        path = Path.home() / ".prefect" / "profiles.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # no profiles file: Prefect's bundled ones, which set no API URL
    active = os.environ.get("PREFECT_PROFILE") or data.get("active")
    profile = data.get("profiles", {}).get(active) if isinstance(active, str) else None
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return (url, f"Prefect profile {active!r} ({path})") if isinstance(url, str) and url else None


def ensure() -> Ensured | None:
    """Point this process at the shared local server, starting it if needed; None if one is configured.

    Call it before Prefect is imported: it sets PREFECT_API_URL in this process's
    environment, which Prefect reads at import. (If Prefect is already loaded, its global
    settings are refreshed too, for a process like the TUI that outlives a server.) A
    file lock makes concurrent commands start one server; a recorded server whose process
    is gone, that does not answer, or that runs another Prefect version is replaced.
    """
    if configured_api_url() is not None:
        return None
    with _LOCK, _locked():
        ensured = _reuse_or_start()
    _use(ensured.state.url)
    return ensured


def announcement(ensured: Ensured) -> str:
    """The one line a command that started the server prints, so it is never left running unseen."""
    state = ensured.state
    why = f"; {ensured.replaced}" if ensured.replaced else ""
    return (
        f"stepline: started Prefect's local API server at {state.url} (pid {state.pid}{why}); it keeps "
        "running for later commands: `stepline server stop` stops it, `stepline server logs` shows its log"
    )


def status() -> Status:
    """What the state file records and whether that server answers; takes no lock, changes nothing."""
    configured = configured_api_url()
    state = _read_state()
    if state is None or not _alive(state.pid):
        return Status("not running", state if state else None, None, configured)
    version = _get_json(f"{state.url}/admin/version", timeout=3.0)
    if isinstance(version, str):
        return Status("running", state, version, configured)
    starting = time.time() - state.started_at < START_TIMEOUT_S
    return Status("starting" if starting else "not answering", state, None, configured)


def stop(grace_s: float = STOP_GRACE_S) -> ServerState | None:
    """Stop the recorded server (SIGTERM to its process group, SIGKILL after ``grace_s``)."""
    with _LOCK, _locked():
        state = _read_state()
        if state is None:
            return None
        _terminate(state.pid, grace_s)
        _state_path().unlink(missing_ok=True)
        return state


def tail(lines: int) -> list[str]:
    """The log's last ``lines`` lines."""
    path = log_path()
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=max(0, lines))]
    except FileNotFoundError:
        raise ServerError(f"no log at {path}: the local server has not been started") from None


def _reuse_or_start() -> Ensured:
    replaced = None
    state = _read_state()
    if state is not None:
        replaced = _unusable(state)
        if replaced is None:
            return Ensured(state, started=False)
        _terminate(state.pid, STOP_GRACE_S)
        _state_path().unlink(missing_ok=True)
    return Ensured(_start(), started=True, replaced=replaced)


def _unusable(state: ServerState) -> str | None:
    """Why the recorded server cannot be used, or None when it can."""
    if not _alive(state.pid):
        return f"the recorded one (pid {state.pid}) was gone"
    # One started moments ago (by a command since killed) may still be coming up.
    deadline = max(time.monotonic() + _HEALTH_GRACE_S, time.monotonic() + START_TIMEOUT_S - state.uptime_s)
    while _get_json(f"{state.url}/health", timeout=3.0) is not True:
        if not _alive(state.pid):
            return f"the recorded one (pid {state.pid}) was gone"
        if time.monotonic() > deadline:
            return f"the recorded one (pid {state.pid}) did not answer"
        time.sleep(0.25)
    served = _get_json(f"{state.url}/admin/version", timeout=3.0)
    installed = _prefect_version()
    if served is None:
        return f"the recorded one (pid {state.pid}) did not say its version"
    if served != installed:
        return f"the recorded one ran Prefect {served}, this is {installed}"
    return None


def _start() -> ServerState:
    home = server_home()  # made by _locked()
    log = log_path()
    if log.exists():
        log.replace(log.with_name("server.log.1"))  # keep the previous server's log, once
    for found in home.rglob("*"):  # files an earlier Stepline let the server make 0644
        _owner_only(found, 0o700 if found.is_dir() else 0o600)
    for _ in range(3):  # the free port found may be taken before the server binds it
        port = _free_port()
        with os.fdopen(_open_private(log, os.O_WRONLY | os.O_APPEND), "ab") as out:
            logged = out.tell()  # this attempt's output starts here
            process = subprocess.Popen(  # noqa: S603 (our interpreter, fixed arguments)
                [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
                cwd=home,  # not the user's folder: its .env / prefect.toml are not the server's
                env=_server_env(home),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C and a killed command do not reach it
                umask=0o077,  # its database (and -wal, -shm), memo store: owner-only, like the folder
            )
        _SPAWNED[process.pid] = process
        state = ServerState(process.pid, port, f"http://{HOST}:{port}/api", _prefect_version(), time.time())
        # Recorded before it is ready: a command killed while waiting leaves a known server.
        _write_state(state)
        try:
            outcome = _wait_ready(state, process, logged)
        except KeyboardInterrupt:
            print(
                f"stepline: Prefect's local API server (pid {state.pid}) is still starting; later "
                "commands use it, `stepline server stop` stops it",
                file=sys.stderr,
            )
            raise
        if outcome is None:
            return state
        _terminate(state.pid, STOP_GRACE_S)
        _state_path().unlink(missing_ok=True)
        if outcome != "port taken":
            raise ServerError(f"Prefect's local API server {outcome}; see its log: {log}")
    raise ServerError(f"Prefect's local API server found no free port on {HOST}; see its log: {log}")


def _wait_ready(state: ServerState, process: subprocess.Popen[bytes], logged: int) -> str | None:
    """None once the server answers; otherwise what went wrong (its output is in the log from ``logged``)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while _get_json(f"{state.url}/health", timeout=2.0) is not True:
        code = process.poll()
        if code is not None:
            text = log_path().read_bytes()[logged:].decode("utf-8", errors="replace")
            if f"Port {state.port} is already in use" in text or "address already in use" in text:
                return "port taken"
            return f"exited with code {code} before it answered"
        if time.monotonic() > deadline:
            return f"did not answer within {START_TIMEOUT_S:.0f} s"
        time.sleep(0.25)
    return None


_SERVER_ENV = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV"}
)
"""What running Python needs of the environment; the server's own settings are its PREFECT_* ones."""
_CLIENT_ONLY = frozenset({"PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"})


def _server_env(home: Path) -> dict[str, str]:
    """The server's environment: an allow-list, not the starting command's whole environment.

    The server lives on after the command that started it, serving every later one, so
    whatever it inherits stays in its process environment (``/proc/<pid>/environ``) for
    days. That command's environment holds the providers' keys under whatever names the
    catalog gives them (``api_key_env``), database passwords, cloud credentials: a deny-list
    cannot know them all. Python needs its basics (PATH, HOME, locale, temporary folder,
    PYTHON*); Prefect's server reads only its PREFECT_* settings (not the client's API URL
    and key, nor a profile naming another server). STEPLINE_HOME stays: it says whose server
    it is (``stepline server status`` and the tests look for it).
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key in _SERVER_ENV
        or key.startswith(("LC_", "PYTHON"))
        or (key.startswith("PREFECT_") and key not in _CLIENT_ONLY)
        or key == "STEPLINE_HOME"
    }
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    return env


def _use(url: str) -> None:
    global _OURS
    _OURS = url
    os.environ["PREFECT_API_URL"] = url
    context = sys.modules.get("prefect.context")
    settings = sys.modules.get("prefect.settings")
    if context is not None and settings is not None and settings.get_current_settings().api.url != url:
        context.refresh_global_settings_context()  # loaded already: re-read the environment


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback is never reached through an HTTP proxy from the environment."""


def _get_json(url: str, timeout: float) -> Any:
    """The decoded JSON body of a GET, or None if there is no answer."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) Prefect process: pids get reused."""
    spawned = _SPAWNED.get(pid)
    if spawned is not None:
        return spawned.poll() is None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc") / str(pid)
    if not proc.exists():
        return True  # no procfs to ask: trust the signal
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and b"prefect" in cmdline


def _terminate(pid: int, grace_s: float) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after ``grace_s``."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # started with start_new_session: its group id is its pid
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        raise ServerError(f"Prefect's local API server (pid {pid}) did not stop; stop it by hand")


def _read_state() -> ServerState | None:
    try:
        data = json.loads(_state_path().read_text(encoding="utf-8"))
        return ServerState(
            pid=int(data["pid"]),
            port=int(data["port"]),
            url=str(data["url"]),
            prefect_version=str(data["prefect_version"]),
            started_at=float(data["started_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(state: ServerState) -> None:
    path = _state_path()
    temporary = path.with_suffix(".tmp")
    with os.fdopen(_open_private(temporary, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(state), indent=2) + "\n")
    temporary.replace(path)  # readers never see half a file


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the server folder's lock: one process at a time checks, starts or stops the server."""
    home = server_home()
    try:
        private_home()
        private_dir(home)
        _owner_only(home, 0o700)
        handle = os.fdopen(_open_private(home / "lock", os.O_WRONLY | os.O_APPEND), "a")
    except OSError as exc:
        raise ServerError(
            f"cannot use {home} for Prefect's local API server ({exc}); set STEPLINE_HOME"
        ) from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def ensure_prefect_api() -> None:
    """Make sure this process talks to a Prefect API server before flows run.

    The configured one (PREFECT_API_URL, a Prefect profile) if any, else Stepline's shared
    local server (below), started on first need. Commands point Prefect at it
    before importing Prefect; this covers callers that imported it first (library use, the
    benchmarks). Without it Prefect would start its own temporary server in this process: not
    thread-safe to start, 10-15 s per process, and left running when the process is killed.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    ensured = ensure()  # Prefect is loaded: its settings are refreshed to the URL
    if ensured is not None and ensured.started:
        print(announcement(ensured), file=sys.stderr)
