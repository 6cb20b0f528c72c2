"""Edit a text in the operator's own editor (``$VISUAL``, else ``$EDITOR``, else ``vi``).

Textual's ``App.suspend`` hands the terminal to the editor and takes it back after;
where the app cannot be suspended (a headless run), the editor runs without it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from textual.app import App, SuspendNotSupported

__all__ = ["EditorFailed", "edit_in_editor", "edit_or_say"]


class EditorFailed(Exception):
    """The editor could not be started, or exited with an error: the text is unchanged."""


def _command() -> list[str]:
    chosen = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return shlex.split(chosen)


def edit_in_editor(app: App[object], text: str, *, suffix: str = ".txt") -> str:
    """``text`` as the operator left it in their editor; ``EditorFailed`` if it did not run."""
    handle, name = tempfile.mkstemp(prefix="stepline-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        command = [*_command(), str(path)]
        with contextlib.ExitStack() as stack:
            with contextlib.suppress(SuspendNotSupported):
                stack.enter_context(app.suspend())
            try:
                done = subprocess.run(command, check=False)  # noqa: S603 (the operator's own editor)
            except OSError as exc:
                raise EditorFailed(
                    f"could not start the editor {command[0]!r} (set $VISUAL or $EDITOR): {exc}"
                ) from None
        if done.returncode != 0:
            raise EditorFailed(f"the editor {command[0]!r} exited with {done.returncode}; nothing changed")
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EditorFailed(f"could not read back what the editor saved: {exc}; nothing changed") from None
    finally:
        path.unlink(missing_ok=True)


def edit_or_say(app: App[object], text: str, *, suffix: str = ".txt") -> str | None:
    """``edit_in_editor``, with a failure shown in the action-failed modal (None: unchanged)."""
    from tui.screens.error import ActionFailed

    try:
        return edit_in_editor(app, text, suffix=suffix)
    except EditorFailed as exc:
        app.push_screen(
            ActionFailed("the editor did not run", str(exc), "set $VISUAL or $EDITOR to an editor")
        )
        return None
