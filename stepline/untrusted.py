"""Text from an input or a model, printed to a terminal: shown, never obeyed.

A terminal obeys some characters instead of showing them: ESC and the C1
controls (U+009B is CSI, U+009D is OSC) start sequences that recolour text,
retitle the window or write to the clipboard; a carriage return or backspace
overwrites what was printed; bidi controls (U+202E and its kin) make text read
in another order than it is stored. Any of these in a workflow's input or a
model's answer would reach the operator's terminal through ``stepline show``,
``run``, ``review``, an error or a log line. Every such place spells them out
with this module, so there is one definition of what is unsafe:

* ``for_terminal`` for text: ``\\x1b``, ``\\x9b``, ``\\u202e`` as visible
  backslash escapes (newline and tab kept unless ``lines=False``);
* ``json_for_terminal`` / ``json_text_for_terminal`` for JSON: the same
  characters as ``\\uXXXX`` escapes, so the text is still valid JSON and
  parses back to the same data; other non-ASCII letters stay readable.

Like ``stepline.errors`` it imports nothing from Stepline (or Rich), so
``steps``, ``storage``, ``flows`` and the TUI can all use it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "UNSAFE",
    "TerminalSafeFormatter",
    "for_terminal",
    "guard_log_handlers",
    "json_for_terminal",
    "json_text_for_terminal",
    "spelled",
]

_BIDI = (
    "\u061c"  # ARABIC LETTER MARK
    "\u200e\u200f"  # LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK
    "\u202a-\u202e"  # embeddings, PDF, overrides (U+202E RIGHT-TO-LEFT OVERRIDE)
    "\u2066-\u2069"  # isolates
    "\u206a-\u206f"  # deprecated format controls: symmetric swapping, digit shapes
)
_SURROGATES = "\ud800-\udfff"  # lone ones (undecodable bytes kept by surrogateescape) cannot be printed

UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")
"""What a terminal may obey rather than show: C0 controls but newline and tab, DEL, C1 controls,
bidi controls, lone surrogates."""
_UNSAFE_IN_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f{_BIDI}{_SURROGATES}]")
"""What ``json.dumps`` leaves raw (it escapes C0 itself); only ever inside a JSON string."""


def spelled(char: str) -> str:
    """``\\x1b`` for a character below U+0100, ``\\u202e`` above: how Python would write it."""
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str, *, lines: bool = True) -> str:
    """``text`` with every character in ``UNSAFE`` spelled out; ``lines=False`` for one line
    (newline and tab spelled out too)."""
    pattern = UNSAFE if lines else _UNSAFE_IN_LINE
    return pattern.sub(lambda m: spelled(m.group()), text)


def json_text_for_terminal(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)`` or Pydantic) with the unsafe
    characters its strings hold as ``\\uXXXX``: still valid JSON, and parsed it is the same data.

    Raw, they can only sit inside strings (JSON's own syntax is ASCII), where ``\\uXXXX`` means them.
    """
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_for_terminal(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON that is safe to print; non-ASCII letters (日本語, العربية) stay readable."""
    return json_text_for_terminal(json.dumps(value, ensure_ascii=False, indent=indent))


class TerminalSafeFormatter(logging.Formatter):
    """Another formatter's lines (message and traceback) with unsafe characters spelled out:
    a log line can quote a model's answer or an input in an exception's message."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return for_terminal(self.inner.format(record))


def guard_log_handlers(loggers: Iterable[logging.Logger] | None = None) -> None:
    """Wrap the formatter of every handler that writes to a stream (stderr: Prefect's console
    handler, Python's last resort) on ``loggers`` (default: every logger there is); handlers
    that send records elsewhere (Prefect's API) are left alone. Safe to call again."""
    if loggers is None:
        everywhere = list(logging.Logger.manager.loggerDict.values())  # other threads add loggers
        loggers = [logging.getLogger(), *(found for found in everywhere if isinstance(found, logging.Logger))]
        extra = [logging.lastResort] if logging.lastResort is not None else []
    else:
        extra = []
    handlers = {id(h): h for h in [*(h for found in loggers for h in found.handlers), *extra]}
    for handler in handlers.values():
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler.formatter, TerminalSafeFormatter
        ):
            handler.setFormatter(TerminalSafeFormatter(handler.formatter))
