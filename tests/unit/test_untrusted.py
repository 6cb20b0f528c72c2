"""``stepline.untrusted``: every character a terminal could obey is spelled out, nothing else is."""

from __future__ import annotations

import io
import json
import logging

import pytest

from stepline.untrusted import (
    UNSAFE,
    TerminalSafeFormatter,
    for_terminal,
    guard_log_handlers,
    json_for_terminal,
    json_text_for_terminal,
)
from tui.literal import literal

C0 = [chr(c) for c in range(0x20) if chr(c) not in "\n\t"]
C1 = [chr(c) for c in range(0x7F, 0xA0)]  # DEL and C1
BIDI = [chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x2070))]
UNSAFE_CHARS = C0 + C1 + BIDI + ["\ud800", "\udcff"]
LETTERS = "Hello, 日本語のテキスト, مرحبا بالعالم, עברית, Ελληνικά, emoji 👩‍💻, tab\tand\nnewline, café"


@pytest.mark.parametrize("char", UNSAFE_CHARS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_unsafe_character_is_spelled_out(char: str) -> None:
    shown = for_terminal(f"a{char}b")
    assert UNSAFE.search(shown) is None
    assert shown == f"a\\x{ord(char):02x}b" if ord(char) < 0x100 else f"a\\u{ord(char):04x}b"
    assert literal(f"a{char}b").plain == shown  # the TUI spells them the same way
    assert json.loads(json_for_terminal({char: [char]})) == {char: [char]}
    assert UNSAFE.search(json_for_terminal({char: [char]})) is None


def test_letters_of_every_script_newline_and_tab_are_left_alone() -> None:
    assert for_terminal(LETTERS) == LETTERS
    assert json.loads(json_for_terminal(LETTERS)) == LETTERS
    assert "日本語のテキスト" in json_for_terminal(LETTERS)  # readable, not \\u65e5...
    assert "مرحبا" in json_for_terminal(LETTERS)


def test_one_line_spells_out_newline_tab_and_carriage_return() -> None:
    assert for_terminal("a\nb\tc\rd", lines=False) == "a\\x0ab\\x09c\\x0dd"


def test_json_text_keeps_its_data() -> None:
    value = {"k\x9b": ["\x1b]0;PWNED\x07", "\u202eevil", 1, None, {"n": "\x00\x7f"}], "日本": "ok"}
    for indent in (None, 2):
        text = json_for_terminal(value, indent=indent)
        assert json.loads(text) == value
        assert UNSAFE.search(text) is None
    pydantic_like = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(json_text_for_terminal(pydantic_like)) == value


def test_a_log_line_quoting_a_model_is_spelled_out() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("stepline.tests.untrusted")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        guard_log_handlers([logger])
        guard_log_handlers([logger])  # idempotent: wrapped once
        assert isinstance(handler.formatter, TerminalSafeFormatter)
        assert not isinstance(handler.formatter.inner, TerminalSafeFormatter)
        try:
            raise ValueError("answer \x9d0;PWNED\x9c")
        except ValueError:
            logger.exception("model said %s", "\x1b[31mred\u202e")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert written.startswith("ERROR model said \\x1b[31mred\\u202e\n")
    assert "ValueError: answer \\x9d0;PWNED\\x9c" in written
    assert UNSAFE.search(written) is None
