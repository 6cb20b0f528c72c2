"""Text a database refuses, stored escaped and read back as it was written.

A model may answer anything: a NUL (U+0000), or JSON such as ``"\\ud800"`` that Python decodes
to an unpaired surrogate. PostgreSQL refuses NUL in ``text`` and ``jsonb`` (even as the JSON
escape ``\\u0000``), and neither database can take an unpaired surrogate (it has no UTF-8
encoding); before this, writing such an answer failed, and the instance paused as ``storage``
with the answer lost.

Each refused character is stored as the escape mark ``U+10FFFD`` (a private-use character)
followed by its code point as six hex digits; the mark itself is escaped the same way, so any
text, including one that already holds what looks like an escape, reads back exactly as it was
written. The columns' types (``EscapedText``, ``EscapedJSON`` in ``storage.models``) apply it on
every write and read, on both databases; the schema is unchanged.

Limit: text written before this, holding the mark followed by six hex digits, reads back changed.
This module imports only the standard library: ``storage.quick_read`` reads SQLite without
SQLAlchemy and undoes the escape with it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MARK", "escape_json", "escape_text", "unescape_json", "unescape_text"]

MARK = "\U0010fffd"
"""Starts every escape; a plane-16 private-use character no text is expected to hold."""

_REFUSED = re.compile(f"[\x00\ud800-\udfff{MARK}]")
_ESCAPED = re.compile(f"{MARK}([0-9a-f]{{6}})")


def _escape(found: re.Match[str]) -> str:
    return f"{MARK}{ord(found.group()):06x}"


def _unescape(found: re.Match[str]) -> str:
    return chr(int(found.group(1), 16))


def escape_text(value: str) -> str:
    """``value`` with NUL, unpaired surrogates and the mark escaped (unchanged when it has none)."""
    return _REFUSED.sub(_escape, value)


def unescape_text(value: str) -> str:
    """The text ``escape_text`` was given."""
    return _ESCAPED.sub(_unescape, value) if MARK in value else value


def escape_json(value: Any) -> Any:
    """A JSON value with every string in it, keys too, passed through ``escape_text``."""
    return _walk(value, escape_text)


def unescape_json(value: Any) -> Any:
    """The JSON value ``escape_json`` was given."""
    return _walk(value, unescape_text)


def _walk(value: Any, change: Any) -> Any:
    # Recursion is bounded: inputs nest at most flows.inputs.MAX_DEPTH levels, and a model's
    # answer is parsed by json, which stops at the interpreter's recursion limit first.
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {change(k) if isinstance(k, str) else k: _walk(v, change) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item, change) for item in value]
    return value
