"""Prefect's result files: none of a run outside Stepline's home, none kept for long inside it.

Stepline keeps every outcome in its own store and never reads a result back from Prefect,
so its flows and tasks persist none (``persist_result=False``). Prefect still pickles the
exception of a flow run that raises, whatever ``persist_result`` says (``handle_exception``
writes it), by default into ``~/.prefect/storage``, 0644 and never cleaned: a
``StepFailed`` carries the model's raw output, personal data included. So:

- commands point Prefect's local result storage under Stepline's home (``results_home``,
  0700) before Prefect is imported, and turn persistence off by default;
- a Stepline flow run that fails deletes the record Prefect just wrote of it
  (``discard_failure_result``, an ``on_failure`` hook);
- what a killed process left behind is deleted after ``RETENTION_S`` by the next command,
  and any file kept until then is made 0600.

Nothing here imports Prefect: ``keep_results_private`` must run before it is imported.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from flows.local_server import data_home, private_dir, private_home

__all__ = ["RETENTION_S", "discard_failure_result", "keep_results_private", "results_home", "sweep"]

RETENTION_S = 3600.0
"""How long a result file may stay: Stepline reads none back, a flow retrying reads none either."""

_STORAGE_PATH = ("PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_LOCAL_STORAGE_PATH")
"""The setting's name and its older alias: either one set means the user chose a place."""


def results_home() -> Path:
    """Where Prefect writes result files for Stepline's commands."""
    return data_home() / "prefect-results"


def keep_results_private() -> None:
    """Before Prefect is imported: no result persisted by default, and result files under Stepline's home.

    A place the user set (PREFECT_RESULTS_LOCAL_STORAGE_PATH) is theirs and kept. If Stepline's
    home cannot be made, Prefect's default stays; ``discard_failure_result`` still cleans up.
    """
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    if any(os.environ.get(name) for name in _STORAGE_PATH):
        return
    try:
        private_home()
        os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(private_dir(results_home()))
    except OSError:
        return
    sweep()


def sweep(retention_s: float = RETENTION_S, now: float | None = None) -> int:
    """Delete result files older than ``retention_s``, make the rest 0600; how many were deleted."""
    folder = results_home()
    cutoff = (time.time() if now is None else now) - retention_s
    deleted = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):  # deleted meanwhile by another command
                if not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
                if info.st_mtime < cutoff:
                    os.unlink(entry.path)
                    deleted += 1
                elif info.st_mode & 0o077:
                    os.chmod(entry.path, 0o600)
    return deleted


def discard_failure_result(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure`` hook: delete the file Prefect wrote of the flow run's exception.

    Only a local file (a record with no storage block: Prefect's ``LocalFileSystem``
    default); a result storage block the user configured is left alone.
    """
    metadata = getattr(getattr(state, "data", None), "metadata", None)
    key = getattr(metadata, "storage_key", None)
    if not isinstance(key, str) or getattr(metadata, "storage_block_id", None) is not None:
        return
    path = Path(key)
    if path.is_absolute():
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
