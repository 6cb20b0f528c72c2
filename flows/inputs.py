"""Reading workflow inputs: one set of size, encoding, nesting and number limits for every source.

A single file, standard input, a file in a batch folder and a line of a JSONL
file all go through ``parse_json``, so an input refused one way is refused
every way, with one line naming the input, what is wrong and how to fix it.
The limits keep one stray input from exhausting memory or the stack, and keep
out what a database cannot store: PostgreSQL's JSONB refuses NUL and unpaired
surrogates and JSON has no NaN or Infinity, while SQLite would take them.

No Prefect or SDK import here: ``stepline`` reads its input before Prefect loads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

from steps.errors import InputError, describe_json_error

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_BYTES",
    "MAX_INT_DIGITS",
    "check_payload",
    "id_problem",
    "is_utf8_name",
    "jsonl_lines",
    "parse_json",
    "read_file",
    "read_input",
    "read_limited",
    "shown_path",
    "too_large",
]

MAX_INPUT_BYTES = 1024 * 1024
"""The largest single input, so that one stray file cannot exhaust memory or the context window."""
MAX_DEPTH = 64
"""How deeply arrays and objects may nest; far below what breaks json, pydantic or the database."""
MAX_INT_DIGITS = 100
"""The longest integer; longer ones (Python refuses to parse 4,301 digits) belong in a string."""

_MIB = 1024 * 1024
_INT_LIMIT = 10**MAX_INT_DIGITS
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"[0-9a-f]{1,32}")
_ID_LENGTH = 32


@dataclass(frozen=True)
class _BadNumber:
    """A number literal json would turn into something unstorable: kept as text until reported."""

    literal: str


def read_input(source: str, stdin: BinaryIO | None) -> tuple[Any, str]:
    """The JSON object in file ``source`` (``-``: ``stdin``) and how to name it in messages."""
    if source == "-":
        where = "standard input"
        if stdin is None:
            raise InputError(f"{where} is closed; pipe one JSON object into it or pass a file")
        return parse_json(read_limited(stdin, where), where), where
    path = Path(source)
    where = f"input file {shown_path(path)}"
    return parse_json(read_file(path, where), where), where


def read_file(path: Path, where: str, hint: str = "pass a JSON file or - for standard input") -> bytes:
    """The file's bytes, refusing one over ``MAX_INPUT_BYTES`` before reading it when its size is known.

    A pipe or process substitution (``<(...)``) is read too, up to the limit.
    """
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_INPUT_BYTES:
                raise too_large(where, size)
            return read_limited(handle, where)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{where} does not exist; {hint}") from None
    except IsADirectoryError:
        raise InputError(f"{where} is a folder; {hint}") from None
    except OSError as exc:
        raise InputError(
            f"cannot read {where}: {exc.strerror or exc}; check that it is a readable file"
        ) from None


def read_limited(stream: BinaryIO, where: str) -> bytes:
    """At most ``MAX_INPUT_BYTES`` from a stream (stdin, a pipe) whose size is not known up front."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise too_large(where, None)
    return data


def jsonl_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None, int]]:
    """``(number, line, size)`` per line, the line ``None`` when over ``MAX_INPUT_BYTES``.

    An oversized line is skipped a chunk at a time, never held whole in memory.
    """
    number = 0
    while line := stream.readline(MAX_INPUT_BYTES + 1):
        number += 1
        if line.endswith(b"\n") or len(line) <= MAX_INPUT_BYTES:
            yield number, line, len(line.rstrip(b"\n"))
            continue
        size = len(line)
        while rest := stream.readline(_MIB):
            size += len(rest)
            if rest.endswith(b"\n"):
                size -= 1
                break
        yield number, None, size


def too_large(where: str, size: int | None) -> InputError:
    """The one message for an input over the size limit (``size`` unknown for a stream)."""
    said = f"is {size / _MIB:.1f} MiB" if size is not None else f"is over {MAX_INPUT_BYTES // _MIB} MiB"
    return InputError(
        f"{where} {said}; one input may be at most {MAX_INPUT_BYTES // _MIB} MiB: "
        "trim it or split it into several inputs"
    )


def parse_json(data: bytes, where: str) -> Any:
    """The one JSON object in ``data``, or an ``InputError`` saying what is wrong with it and the fix.

    Nesting is measured on the text without recursion before json parses it,
    so 100,000 nested brackets are a message, not a ``RecursionError``.
    """
    try:
        text = data.decode("utf-8-sig")  # a byte order mark is how some editors save UTF-8
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON") from None
    if not text.strip():
        raise InputError(f"{where} is empty; an input is one JSON object: put one in it")
    depth = _too_deep(text)
    if depth is not None:
        raise _nested(where, f"{depth} levels deep")
    try:
        payload = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_BadNumber)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON: {describe_json_error(exc)}") from None
    except RecursionError:
        raise _nested(where, f"more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise InputError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InputError(
            f"{where} holds {_kind(payload)}, not a JSON object; an input is one object whose keys are "
            "the workflow's input fields: wrap the value in one"
        )
    check_payload(payload, where)
    return payload


def check_payload(payload: Any, where: str) -> None:
    """Refuse what no store can hold, wherever the payload came from (a file, or Python code).

    Walked without recursion: no NUL or unpaired surrogate in any string or
    key, integers of at most ``MAX_INT_DIGITS`` digits, only finite numbers,
    nesting of at most ``MAX_DEPTH`` levels.
    """
    dump = getattr(payload, "model_dump", None)
    if callable(dump):  # a pydantic model built in code
        payload = dump()
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(payload, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            _check_text(value, where, path)
        elif isinstance(value, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise _nested(where, f"more than {MAX_DEPTH} levels deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    at = (*path, key if isinstance(key, str | int) else repr(key))
                    if isinstance(key, str):
                        _check_text(key, where, at)
                    stack.append((item, depth + 1, at))
            else:
                stack.extend((item, depth + 1, (*path, index)) for index, item in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and abs(value) >= _INT_LIMIT:
            raise _long_int(where, _digits(value), path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _not_finite(where, repr(value), path)
        elif isinstance(value, _BadNumber):
            digits = value.literal.removeprefix("-")
            if digits.isdigit():
                raise _long_int(where, len(digits), path)
            raise _not_finite(where, value.literal, path)


def shown_path(path: Path | str) -> str:
    """The path as one printable line: bytes of a name that are not UTF-8 as ``\\xNN``, control
    characters (a newline, an escape sequence) escaped, and a path too long to read shortened."""
    shown = _printable(os.fsdecode(path))
    if len(shown) > 200:
        shown = f"{shown[:80]}…{shown[-80:]} ({len(shown)} characters)"
    return shown


def is_utf8_name(path: Path | str) -> bool:
    """Whether the path is UTF-8 text: an input's source is recorded by name, as text."""
    try:
        os.fsdecode(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def id_problem(kind: str, value: str, listing: str) -> str | None:
    """Why ``value`` cannot be (a prefix of) an id, or ``None``; checked before any query is sent.

    Ids are 32 lowercase hex characters; anything else cannot match one, and a
    100,000-character or non-UTF-8 one would reach the database as it is.
    """
    if _ID.fullmatch(value):
        return None
    shown = f"'{_printable(value if len(value) <= 40 else value[:40] + '…')}'"
    if not value:
        why = "an empty id matches nothing"
    elif len(value) > _ID_LENGTH:
        shown += f" ({len(value)} characters)"
        why = f"an id is {_ID_LENGTH} characters of 0-9 and a-f"
    else:
        why = "an id holds only 0-9 and a-f"
    return f"no {kind} with id {shown}: {why}; copy one from `{listing}`"


def _too_deep(text: str) -> int | None:
    """How deeply ``text``'s arrays and objects nest, when deeper than ``MAX_DEPTH``; else ``None``."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None  # too few brackets to matter
    outside = _STRINGS.sub("", text)
    unterminated = outside.find('"')
    if unterminated >= 0:  # json stops there: the rest is inside an unclosed string
        outside = outside[:unterminated]
    steps = (1 if bracket in "[{" else -1 for bracket in _BRACKETS.findall(outside))
    depth = max(accumulate(steps), default=0)
    return depth if depth > MAX_DEPTH else None


def _parse_int(literal: str) -> int | _BadNumber:
    if len(literal.removeprefix("-")) > MAX_INT_DIGITS:
        return _BadNumber(literal)
    return int(literal)


def _parse_float(literal: str) -> float | _BadNumber:
    value = float(literal)
    return value if math.isfinite(value) else _BadNumber(literal)


def _check_text(text: str, where: str, path: tuple[str | int, ...]) -> None:
    if "\x00" in text:
        raise InputError(
            f"{where} has a NUL character (\\u0000) at {_json_path(path)}; text may not hold NUL "
            "(PostgreSQL cannot store it): remove it"
        )
    found = _SURROGATE.search(text)
    if found:
        raise InputError(
            f"{where} has an unpaired surrogate (\\u{ord(found.group()):04x}) at {_json_path(path)}; "
            "text must be valid Unicode: fix or remove that \\u escape"
        )


def _nested(where: str, how: str) -> InputError:
    return InputError(f"{where} is nested {how}; inputs may nest at most {MAX_DEPTH} levels: flatten it")


def _long_int(where: str, digits: int, path: tuple[str | int, ...]) -> InputError:
    return InputError(
        f"{where} has a {digits}-digit integer at {_json_path(path)}; integers may have at most "
        f"{MAX_INT_DIGITS} digits: send a longer number as a string"
    )


def _not_finite(where: str, literal: str, path: tuple[str | int, ...]) -> InputError:
    shown = literal if len(literal) <= 24 else literal[:20] + "…"
    return InputError(
        f"{where} has {shown} at {_json_path(path)}, which is not a finite number; JSON numbers must "
        "be finite (no NaN or Infinity, nothing beyond about 1.8e308): send it as a string"
    )


def _digits(value: int) -> int:
    """How many decimal digits ``value`` has, without ``str()`` (refused past 4,300 digits)."""
    magnitude = abs(value)
    digits = int((magnitude.bit_length() - 1) * math.log10(2)) + 1  # right, or one short
    return digits + 1 if magnitude >= pow(10, digits) else digits


def _json_path(path: tuple[str | int, ...]) -> str:
    """``$.parties[0].name``: where a value sits, with odd keys quoted as JSON strings."""
    parts = ["$"]
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _KEY.fullmatch(part):
            parts.append(f".{part}")
        else:
            parts.append(f"[{json.dumps(part if len(part) <= 40 else part[:40] + '…')}]")
    return "".join(parts)


def _printable(text: str) -> str:
    """``text`` safe to print: undecodable bytes as ``\\xNN``, control characters escaped."""
    with contextlib.suppress(UnicodeEncodeError):  # raised for a surrogate that is not a lost byte
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    return "a number"
