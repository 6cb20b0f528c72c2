"""The PII guard on its own: what it learns from an instance, what it finds by pattern, what it restores."""

from __future__ import annotations

import json

from steps.pii import PiiGuard, Redaction


def guard_for(message: str, **extracted: str | None) -> PiiGuard:
    guard = PiiGuard()
    guard.learn({"channel": "email", "message": message})
    guard.learn(extracted, whole=True)
    return guard


def test_parts_of_names_and_relatives_are_found_without_any_extraction() -> None:
    guard = guard_for("Hello, this is Maria Jensen. My husband Ole called too. Thanks, Maria")

    redacted, redaction = guard.redact_messages(
        [{"role": "user", "content": "Ole and Jensen wrote; maria too."}]
    )

    assert redacted[0]["content"] == "[NAME 1] and [NAME 2] wrote; [NAME 3] too."
    assert set(redaction.originals.values()) == {"Ole", "Jensen", "maria"}
    assert redaction.counts == {"name": 3}


def test_digit_runs_are_compared_on_their_digits() -> None:
    guard = guard_for("My card 4111 1111 1111 1234 was charged; account AC-20931.")

    redaction = Redaction()
    text = guard.redact("the card ending 1234 and account 20931, card 4111-1111-1111-1234", redaction)

    assert "1234" not in text
    assert "20931" not in text
    assert redaction.counts["number"] == 3


def test_patterns_are_found_in_text_the_instance_never_held() -> None:
    guard = PiiGuard()  # knows nothing of the instance
    text = (
        "mail ana@example.org, IBAN DE89 3704 0044 0532 0130 00, card 4242 4242 4242 4242, SSN 536-22-1234, "
        "from 203.0.113.42 or 2001:db8::1, born 1985-03-12, call +44 20 7946 0958"
    )

    kinds = sorted({finding.kind for finding in guard.find(text)})

    assert kinds == ["CARD", "DATE", "EMAIL", "IBAN", "ID", "IP", "PHONE"]
    assert guard.find("an invoice of 120.50 EUR for 3 items, version 2.1") == []


def test_placeholders_are_put_back_locally_and_never_count_as_leaks() -> None:
    guard = guard_for("I'm Ana Müller, Hauptstraße 12, 10115 Berlin", name="Ana Müller")
    redacted, redaction = guard.redact_messages(
        [{"role": "user", "content": "Write to Ana Müller, Hauptstraße 12"}]
    )
    body = json.dumps({"messages": redacted}, ensure_ascii=True).encode()

    assert guard.leaks(body) == {}
    assert (
        guard.leaks(json.dumps({"messages": [{"content": "Gr\\u00fc\\u00dfe an M\\u00fcller"}]}).encode())
        == {}
    )
    assert guard.leaks(
        json.dumps({"tools": [{"description": "M\u00fcller"}]}, ensure_ascii=True).encode()
    ) == {"name": 1}
    placeholder = next(p for p, v in redaction.originals.items() if v == "Ana Müller")
    assert redaction.restore({"body": f"Dear {placeholder},", "n": 1}) == {"body": "Dear Ana Müller,", "n": 1}
