"""The privacy analysis and its run-time checks, with no Prefect, HTTP or database."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
from enum import StrEnum
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from steps.declassifiers import Placeholders, RestoreFailed, declassifier
from steps.definition import CLASSIFY, Prompt, Sensitivity, Step
from steps.errors import DefinitionError
from steps.privacy import (
    Carries,
    Code,
    Declassified,
    NotCleared,
    Origin,
    Personal,
    StepPrivacy,
    analyse_workflow,
    check_cleared,
    clear_leaves,
)
from tests.privacy.common import Draft, Request, Summary, step


class Colour(StrEnum):
    RED = "red"


class Inner(BaseModel):
    flag: bool
    note: str


class Everything(BaseModel):
    literal: Literal["a", "b"]
    enum: Colour
    flag: bool
    bounded: int = Field(ge=0, le=10)
    unbounded: int
    share: float = Field(gt=0, lt=1)
    day: dt.date
    text: str
    order: Annotated[str, Code("order-number", r"^[A-Z]{2}-[0-9]{5}$")]
    patterned: str = Field(pattern=r"^x+$")
    cleared: Declassified
    maybe: Declassified | None = None
    options: list[Literal["x", "y"]]
    inner: Inner
    personal: Personal[str]
    mapping: dict[str, int]


def test_types_are_judged_by_what_they_can_carry() -> None:
    privacy = StepPrivacy.alone(
        Step(
            name="all",
            kind=CLASSIFY,
            input_model=Everything,
            output_model=Inner,
            prompt=Prompt(system="s", user=" ".join(f"${name}" for name in Everything.model_fields)),
        )
    )
    carries = {f.name: f.carries for f in privacy.rendered}
    assert carries == {
        "literal": Carries.NO_TEXT,
        "enum": Carries.NO_TEXT,
        "flag": Carries.NO_TEXT,
        "bounded": Carries.NO_TEXT,
        "unbounded": Carries.TEXT,  # a phone number fits in an int
        "share": Carries.NO_TEXT,
        "day": Carries.NO_TEXT,
        "text": Carries.TEXT,
        "order": Carries.NO_TEXT,  # a pattern the author names
        "patterned": Carries.TEXT,  # a pattern alone is not that claim
        "cleared": Carries.DECLASSIFIED,
        "maybe": Carries.DECLASSIFIED,
        "options": Carries.NO_TEXT,
        "inner": Carries.TEXT,
        "personal": Carries.PERSONAL,
        "mapping": Carries.TEXT,
    }
    assert privacy.options >= {"a", "b", "red", "x", "y"}
    assert not privacy.private_only  # judged alone, nothing is personal unless declared pii
    with pytest.raises(DefinitionError, match="start it with \\^"):
        Code("loose", r"[A-Z]+")


class Subject(BaseModel):
    subject: str


SUMMARISE = step("summarise", "$channel $message", Request, Summary)
CLASSIFY_SUBJECT = step("classify-subject", "$subject", Request, Summary)  # the workflow's own input
RECLASSIFY = step("reclassify", "$subject", Subject, Summary)  # a plain str of its own
DRAFT = step("draft", "$topic $subject", Draft, Summary)
CHANNEL_ONLY = step("by-channel", "$channel", Request, Summary)


def test_taint_follows_the_data() -> None:
    privacy = analyse_workflow("w", Request, [SUMMARISE, CLASSIFY_SUBJECT, RECLASSIFY, DRAFT, CHANNEL_ONLY])

    assert privacy.personal_inputs == ("message",)
    summarise, subject, other, draft, channel = (
        privacy.steps[n] for n in ("summarise", "classify-subject", "reclassify", "draft", "by-channel")
    )
    assert summarise.private_reason == "its prompt renders $message (personal: marked Personal)"
    assert summarise.personal_outputs == ("summary",)  # topic is a Literal: it cannot carry it
    # The workflow's own input, handed over: its fields not marked Personal arrive cleared.
    assert subject.private_reason is None
    assert subject.rendered[0].describe() == "$subject (declassified: an input field not marked Personal)"
    # A plain str of any other model: of unknown origin, so presumed personal.
    assert other.private_reason == "its prompt renders $subject (free text: a plain str)"
    assert draft.private_reason is None  # a Literal and a Declassified field
    assert draft.declassified == ("subject",)
    assert channel.private_reason is None
    assert channel.summary().startswith("any model: it renders $channel (cannot carry free text")


def test_a_workflow_without_personal_data_keeps_every_step_public() -> None:
    class Plain(BaseModel):
        subject: str
        message: str

    privacy = analyse_workflow("w", Plain, [step("s", "$message", Plain, Summary)])
    assert not privacy.holds_personal_data
    assert privacy.steps["s"].private_reason is None
    assert privacy.steps["s"].summary() == "any model: its workflow holds no personal data"


def test_a_pii_step_without_personal_inputs_makes_every_free_text_input_personal() -> None:
    class Plain(BaseModel):
        channel: Literal["email"]
        message: str

    extract = step("extract", "$message", Plain, Summary, sensitivity=Sensitivity.PII)
    echo = step("echo", "$message", Plain, Summary)
    privacy = analyse_workflow("w", Plain, [extract, echo])

    assert privacy.personal_inputs == ("message",)
    assert privacy.note is not None
    assert "mark the ones that are" in privacy.note
    assert privacy.steps["extract"].private_reason == "the step is declared pii"
    assert privacy.steps["echo"].private_only


def test_an_edited_prompt_is_judged_again() -> None:
    privacy = analyse_workflow("w", Request, [CHANNEL_ONLY])
    edited = Step(**{**CHANNEL_ONLY.__dict__, "prompt": Prompt(system="s", user="$channel: $message")})

    assert not privacy.of(CHANNEL_ONLY).private_only
    assert privacy.of(edited).private_only
    assert privacy.of(edited) is privacy.of(edited)  # judged once per prompt


# The label ---------------------------------------------------------------------------------


def test_declassified_text_is_made_only_by_stepline_and_lost_by_any_change() -> None:
    with pytest.raises(TypeError, match="made by Stepline only"):
        Declassified("Maria")
    cleared = clear_leaves(Summary(topic="other", summary="all good"), Origin("step", "draft"))
    text = cleared.summary
    assert isinstance(text, Declassified)
    assert str(text.origin) == "step draft, which saw no personal data"
    for derived in (text.upper(), text + "!", f"{text}", text[:3], " ".join([text, text]), str(text)):
        assert type(derived) is str, derived
    assert type(Summary(topic="other", summary=text).summary) is str  # a plain str field drops it
    for copied in (copy.deepcopy(text), pickle.loads(pickle.dumps(text))):  # noqa: S301 (our own bytes)
        assert isinstance(copied, Declassified)
        assert copied.origin == text.origin


def test_check_cleared_asks_every_clean_field_to_prove_it() -> None:
    draft = analyse_workflow("w", Request, [DRAFT]).steps["draft"]
    hidden = Placeholders("names").hide({"name": "Maria Jensen"})

    assert check_cleared(draft, Draft(topic="billing", subject=hidden["name"]), frozenset({"names"})) == {
        "subject": "declassifier names"
    }
    with pytest.raises(NotCleared) as plain:
        check_cleared(draft, Draft(topic="billing", subject="Maria Jensen"), frozenset({"names"}))
    assert "$subject must hold Declassified text" in plain.value.message
    assert "Maria" not in plain.value.message  # never the value
    with pytest.raises(NotCleared, match="which its workflow does not name"):
        check_cleared(draft, Draft(topic="billing", subject=hidden["name"]), frozenset())
    smuggled = Draft.model_construct(topic="Maria Jensen", subject=hidden["name"])  # type: ignore[arg-type]
    with pytest.raises(NotCleared, match="\\$topic must hold a Literal"):
        check_cleared(draft, smuggled, frozenset({"names"}))
    # The workflow's own input must be the one handed over, not one built again from other text.
    subject = analyse_workflow("w", Request, [CLASSIFY_SUBJECT]).steps["classify-subject"]
    handed = Request(channel="email", subject="s", message="m").model_copy(
        update={"subject": clear_leaves("Double charge", Origin("input", "subject"))}
    )
    assert check_cleared(subject, handed, frozenset()) == {
        "subject": "input field subject, not marked Personal"
    }
    with pytest.raises(NotCleared, match="must hold the workflow's own input as it was handed over"):
        check_cleared(subject, Request(channel="email", subject="Maria Jensen", message="m"), frozenset())


# Declassifiers ------------------------------------------------------------------------------


class LineItem(BaseModel):
    description: str
    amount: float


class Invoice(BaseModel):
    greeting: str = Field(max_length=40)
    line_items: list[LineItem]


def test_placeholders_are_put_back_into_the_answer_as_its_own_model() -> None:
    names = Placeholders("contact")
    hidden = names.hide({"name": "Maria Jensen", "iban": None}, missing={"iban": "your account"})
    answer = Invoice(
        greeting=f"Dear {hidden['name']},",
        line_items=[LineItem(description=f"refund to {hidden['iban']}", amount=9.5)],
    )

    restored = hidden.restore(answer)

    assert restored == Invoice(
        greeting="Dear Maria Jensen,", line_items=[LineItem(description="refund to your account", amount=9.5)]
    )
    assert isinstance(restored.line_items[0], LineItem)  # typed, validated: not a dict
    assert "Maria" not in repr(hidden)
    with pytest.raises(DefinitionError, match="has no value in this instance"):
        names.hide({"name": None})["name"]
    with pytest.raises(RestoreFailed, match="no longer a valid Invoice: greeting"):
        names.hide({"name": "M" * 60}).restore(Invoice(greeting="Dear [NAME]", line_items=[]))


def test_a_function_declassifier_clears_what_it_returns() -> None:
    @declassifier("order-count", "how many orders are mentioned")
    def order_count(text: str) -> str:
        return str(text.count("order"))

    counted = order_count("order 1, order 2")
    assert counted == "2"
    assert isinstance(counted, Declassified)
    assert str(counted.origin) == "declassifier order-count"
    with pytest.raises(DefinitionError, match="lowercase words"):
        declassifier("Bad Name", "x")
