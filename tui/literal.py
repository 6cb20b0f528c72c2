"""Untrusted text (model output, workflow inputs) as Rich ``Text`` that is shown, never obeyed.

``Text`` is never parsed for markup, so ``[bold red]x[/]`` stays as typed.
Control characters are another matter: an ESC or BEL passed through could
recolour the terminal or retitle the window, and a bidi override reorder what
is shown, so every character in ``stepline.untrusted.UNSAFE`` (the command
line's definition too) is replaced by its ``\\xNN`` or ``\\uNNNN`` spelling, dimmed.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from stepline.untrusted import UNSAFE, spelled

__all__ = ["literal"]


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
    for match in UNSAFE.finditer(chunk):
        text.append(chunk[position : match.start()], style=style)
        text.append(spelled(match.group()), style=f"{style} dim".strip())
        position = match.end()
    text.append(chunk[position:], style=style)
