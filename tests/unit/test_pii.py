"""The guard on its own: it matches the instance's own values however they are written, and
never what every instance's request carries."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from steps.definition import Prompt
from steps.pii import Constants, Leak, PiiGuard, Rendered, normalise


class Reply(BaseModel):
    subject: str = Field(description="A subject line, no Name in it")
    body: str


PROMPT = Prompt(
    system="You are the System. Write a High quality reply.", user="Topic: $topic\nGreet $customer"
)
CONSTANTS = Constants.of(PROMPT, Reply, frozenset({"high", "normal", "technical"}))


def body(*contents: str, model: str = "gpt-x") -> bytes:
    messages = [{"role": "system", "content": PROMPT.system}]
    messages += [{"role": "user", "content": c} for c in contents]
    return json.dumps({"model": model, "messages": messages}, ensure_ascii=True).encode()


def leaks(
    learned: PiiGuard, raw: bytes, model: str = "gpt-x", rendered: Rendered | None = None
) -> list[Leak]:
    """As the executor asks: the provider's model name is the same for every instance."""
    return learned.leaks(raw, CONSTANTS, also_constant=frozenset({model}), rendered=rendered)


def guard(**values: str) -> PiiGuard:
    learned = PiiGuard()
    learned.learn(values, "extract-contact")
    return learned


def test_the_instance_values_are_found_however_they_are_written() -> None:
    learned = guard(name="Jenny O'Connor", phone="+44 20 7946 0958", card="4242 4242 4242 4242")
    learned.learn("メールhiroshi51@example.netまで、佐藤 花子", "input.message")

    for text in [
        "Dear jenny,",  # a word of a name, in lowercase
        "O’CONNOR",  # another apostrophe, upper case
        "call 020\u00a07946\u202f0958",  # no-break and narrow spaces inside the number
        "card ending 4242",  # the last four digits of the card
        "call four four two zero seven nine four six zero nine five eight",  # digits spelled out
        "cuatro dos cuatro dos cuatro dos",  # in Spanish
        "\uff14\uff12\uff14\uff12",  # full-width digits
        "write to HIROSHI51@example.net",
        "佐藤様へ",  # a CJK name, with no spaces around it
    ]:
        assert leaks(learned, body(text)), text


def test_what_every_request_carries_is_never_a_finding() -> None:
    """A private model that took "System", "Name", "High" and "text" for personal values: they
    are this step's prompt, schema and options, and the wire format's words, so never findings."""
    learned = guard(name="System Name", role="High Technical", kind="text", model="gpt-x")

    found = leaks(learned, body("Topic: high\nGreet [NAME]", "Topic: technical"))

    assert found == []
    anthropic = json.dumps(
        {
            "model": "gpt-x",
            "system": PROMPT.system,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Topic: normal"}]}],
        }
    ).encode()
    assert leaks(learned, anthropic) == []


def test_a_guard_that_learned_nothing_finds_nothing() -> None:
    """No list of words that look like names, no patterns on their own: only the instance's values."""
    text = "Maria Jensen, maria@example.org, +45 20 11 33 44, IBAN DE89 3704 0044 0532 0130 00"
    assert leaks(PiiGuard(), body(text)) == []
    assert not PiiGuard()


def test_a_long_personal_input_gives_only_its_shaped_parts() -> None:
    """A whole message is not matched word by word (its words are the language itself): its
    e-mails, handles, web addresses and digit runs are."""
    learned = PiiGuard()
    message = (
        "Hello, my order is late and I am not happy at all. " * 5
        + "Mail a.b@example.org, @abby99, 0151 2345 6789"
    )
    learned.learn({"message": message}, "input")

    assert leaks(learned, body("my order is late and I am not happy")) == []
    found = leaks(learned, body("reach a.b@example.org or @abby99 on 0151-2345-6789"))
    assert sorted(leak.kind for leak in found) == ["e-mail", "handle", "number"]
    assert {leak.source for leak in found} == {"input.message"}


def test_a_finding_names_kind_source_and_place_never_the_value() -> None:
    learned = guard(name="Ana Müller")

    (leak,) = leaks(learned, body("Topic: high\nGreet Müller"))  # sent as M\\u00fcller

    assert (leak.kind, leak.source, leak.where) == ("word", "extract-contact.name", "messages[1].content")
    assert "Müller" not in leak.describe()
    assert leak.describe() == "a word from extract-contact.name, in messages[1].content"


def test_placeholders_and_the_model_name_are_not_findings() -> None:
    learned = guard(name="Bill May", account="AC-2026")
    assert leaks(learned, body("Greet [NAME]", model="claude-2026"), model="claude-2026") == []
    assert leaks(learned, body("order 2026")) != []


def test_normalise_reads_digits_in_words_and_other_widths() -> None:
    assert normalise("Four two\u00a0ZWEI\u202fneun") == "4 2 2 9"
    assert normalise("ＡＢＣ１２３") == "abc123"
    assert normalise("一二三四") == "1234"


def test_a_field_clean_by_its_type_is_not_the_guards_and_a_cleared_one_is_named() -> None:
    """An invoice number the customer quoted, rendered by a Code field: validated by its type,
    so not a finding there. The same number in text a declassifier cleared is, and the finding
    names that field."""
    template = "Invoice $invoice, re: $note"
    constants = Constants.of(Prompt(system=PROMPT.system, user=template), Reply, frozenset())
    learned = PiiGuard()
    learned.learn({"body": "Please check invoice INV-999001 for me, it was charged twice. Maria"}, "input")
    typed = Rendered.of(template, {"invoice": "INV-999001", "note": "a question"}, typed={"invoice"})
    leaky = Rendered.of(template, {"invoice": "INV-999001", "note": "about INV-999001"}, typed={"invoice"})

    assert learned.leaks(body(typed.message), constants, rendered=typed) == []
    (found,) = learned.leaks(body(leaky.message), constants, rendered=leaky)
    assert (found.kind, found.source, found.field) == ("number", "input.body", "note")
    assert found.describe() == "a number from input.body, in $note"
    # Masked where the typed field was inserted, not wherever its text occurs.
    assert learned.leaks(body(typed.message + " INV-999001"), constants, rendered=typed) != []


def test_the_words_of_a_sentence_are_not_the_instances_own() -> None:
    learned = PiiGuard()
    learned.learn(
        {"message": "Please check my invoice, it was charged twice. Maria", "name": "Maria Jensen"}, "input"
    )

    assert leaks(learned, body("Please check the invoice")) == []
    assert [leak.kind for leak in leaks(learned, body("for jensen"))] == ["word"]
