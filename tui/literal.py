"""Untrusted text (model output, workflow inputs) as Rich ``Text`` that is shown, never obeyed.

``Text`` is never parsed for markup, so ``[bold red]x[/]`` stays as typed.
Control characters are another matter: an ESC or BEL passed through could
recolour the terminal or retitle the window, so every C0/C1 control except
newline and tab is replaced by its ``\\xNN`` spelling, dimmed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.text import Text

__all__ = ["literal"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def literal(value: str | None, spans: Iterable[tuple[int, int, str]] = (), *, style: str = "") -> Text:
    """``value`` shown literally; ``spans`` (start, end, style) in ``value``'s offsets are highlighted."""
    raw = value or ""
    marks: list[str] = [""] * len(raw)
    for start, end, mark in spans:
        for index in range(max(start, 0), min(end, len(raw))):
            marks[index] = mark
    text = Text(style=style)
    start = 0
    for index in range(1, len(raw) + 1):
        if index == len(raw) or marks[index] != marks[start]:
            _append(text, raw[start:index], marks[start])
            start = index
    return text


def _append(text: Text, chunk: str, style: str) -> None:
    position = 0
    for match in _CONTROL.finditer(chunk):
        text.append(chunk[position : match.start()], style=style)
        text.append(f"\\x{ord(match.group()):02x}", style=f"{style} dim".strip())
        position = match.end()
    text.append(chunk[position:], style=style)
