"""Agreement arithmetic: kinds per dotted path, modal shares, the verdict, digests, history groups."""

from __future__ import annotations

from enum import Enum
from typing import Literal

import pytest
from pydantic import BaseModel

from steps.consistency import (
    FieldKind,
    Series,
    agreement_of,
    field_kinds,
    history_disagreements,
    input_digest,
    judged,
)
from steps.definition import CLASSIFY, Prompt, Step
from steps.errors import DefinitionError


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Party(BaseModel):
    name: str
    role: Literal["buyer", "seller"]


class Verdict(BaseModel):
    risk: Literal["low", "medium", "high"]
    urgent: bool
    score: float
    colour: Colour | None = None
    party: Party
    maybe: Party | None = None
    tags: list[str]
    reason: str


def test_nested_models_flatten_to_dotted_paths_and_lists_stay_whole() -> None:
    assert field_kinds(Verdict) == {
        "risk": FieldKind.CHOICE,
        "urgent": FieldKind.BOOLEAN,
        "score": FieldKind.NUMBER,
        "colour": FieldKind.CHOICE,
        "party.name": FieldKind.TEXT,
        "party.role": FieldKind.CHOICE,
        "maybe.name": FieldKind.TEXT,
        "maybe.role": FieldKind.CHOICE,
        "tags": FieldKind.VALUE,
        "reason": FieldKind.TEXT,
    }


def test_agreement_is_the_modal_share_of_all_samples_failed_ones_included() -> None:
    kinds = {"risk": FieldKind.CHOICE, "tags": FieldKind.VALUE, "party.role": FieldKind.CHOICE}
    outputs = [
        {"risk": "medium", "tags": ["a", "b"], "party": {"role": "buyer"}},
        {"risk": "medium", "tags": ["a", "b"], "party": {"role": "buyer"}},
        {"risk": "high", "tags": ["b", "a"], "party": {"role": "buyer"}},
    ]

    found = {f.path: f for f in agreement_of(outputs, kinds, samples=4)}  # one sample failed

    assert found["risk"].agreement == 0.5
    assert found["risk"].values == (("medium", 2), ("high", 1))
    assert found["tags"].distinct == 2  # a list is one value: order counts
    assert found["party.role"].agreement == 0.75


def test_text_is_judged_only_when_there_is_nothing_else() -> None:
    outputs = [{"risk": "low", "reason": "a"}, {"risk": "low", "reason": "b"}]
    mixed = agreement_of(outputs, {"risk": FieldKind.CHOICE, "reason": FieldKind.TEXT}, 2)
    assert [f.path for f in judged(mixed)] == ["risk"]
    series = Series(0.0, True, 2, mixed, {}, {"m": 2}, threshold=0.9)
    assert series.consistent

    only_text = agreement_of(outputs, {"reason": FieldKind.TEXT}, 2)
    assert not Series(0.0, True, 2, only_text, {}, {"m": 2}, threshold=0.9).consistent


def test_the_digest_ignores_key_order_and_spacing() -> None:
    assert input_digest({"b": 1, "a": "é"}) == input_digest({"a": "é", "b": 1})
    assert input_digest({"a": 1}) != input_digest({"a": 2})


def test_history_groups_only_repeated_inputs_whose_judged_fields_differ() -> None:
    rows = [
        ({"text": "x"}, {"risk": "medium", "reason": "one"}, "m1"),
        ({"text": "x"}, {"risk": "high", "reason": "two"}, "m2"),
        ({"text": "y"}, {"risk": "low", "reason": "one"}, "m1"),
        ({"text": "y"}, {"risk": "low", "reason": "two"}, "m1"),  # only the text differs
        ({"text": "z"}, {"risk": "low", "reason": "one"}, "m1"),
        ({"text": "z"}, None, "m1"),  # in flight: no answer yet
    ]

    class Out(BaseModel):
        risk: Literal["low", "medium", "high"]
        reason: str

    report = history_disagreements(rows, Out)

    assert (report.outputs, report.inputs, report.repeated) == (5, 3, 2)
    (group,) = report.groups
    assert group.input == {"text": "x"}
    assert group.models == {"m1": 1, "m2": 1}
    assert [(f.path, f.values) for f in group.disagreeing] == [("risk", (("medium", 1), ("high", 1)))]


class _In(BaseModel):
    text: str


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01, float("nan")])
def test_the_consistency_threshold_is_above_0_and_at_most_1(threshold: float) -> None:
    with pytest.raises(DefinitionError, match="consistency_threshold must be above 0 and at most 1"):
        Step(
            name="rate",
            kind=CLASSIFY,
            prompt=Prompt(system="s", user="$text"),
            input_model=_In,
            output_model=_In,
            consistency_threshold=threshold,
        )
