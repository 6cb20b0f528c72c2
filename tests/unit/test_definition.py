"""Step definitions: sampling from the kind, prompt rendering as data, versions by content."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from steps.definition import CLASSIFY, EXTRACT, GENERATE, Prompt, Sampling, Step, StepKind
from steps.errors import DefinitionError


class In(BaseModel):
    text: str
    count: int = 1


class Out(BaseModel):
    label: str


def make(**overrides: object) -> Step[In, Out]:
    fields: dict[str, object] = {
        "name": "label-it",
        "kind": CLASSIFY,
        "prompt": Prompt(system="Label the text.", user="Text: $text"),
        "input_model": In,
        "output_model": Out,
    }
    fields.update(overrides)
    return Step(**fields)  # type: ignore[arg-type]


def test_kind_defaults_follow_the_rule_of_thumb() -> None:
    for kind in (EXTRACT, CLASSIFY):
        assert kind.defaults.temperature is not None
        assert 0.0 <= kind.defaults.temperature <= 0.1
    assert GENERATE.defaults.temperature is not None
    assert 0.3 <= GENERATE.defaults.temperature <= 0.6
    assert all(k.defaults.top_p is not None for k in (EXTRACT, CLASSIFY, GENERATE))


def test_step_overrides_merge_over_kind_defaults() -> None:
    step = make(sampling=Sampling(temperature=0.05, max_tokens=64))
    sampling = step.effective_sampling
    assert sampling.temperature == 0.05
    assert sampling.top_p == CLASSIFY.defaults.top_p
    assert sampling.max_tokens == 64


def test_sampling_never_enters_the_prompt_text() -> None:
    messages = make().prompt.render(In(text="hello"))
    assert "temperature" not in str(messages).lower()


def test_new_step_kinds_are_registered() -> None:
    kind = StepKind("triage", Sampling(temperature=0.0, top_p=1.0))
    assert StepKind.registry["triage"] is kind
    with pytest.raises(DefinitionError, match="must set temperature and top_p"):
        StepKind("broken", Sampling(temperature=0.2))


def test_input_is_rendered_as_data_never_as_template_code() -> None:
    hostile = "$count ${count} {{ 7*7 }} {text.__class__} %(x)s $$"
    messages = make(prompt=Prompt(system="s", user="A: $text / B: $count")).prompt.render(
        In(text=hostile, count=3)
    )
    assert messages[1]["content"] == f"A: {hostile} / B: 3"


def test_prompt_placeholders_must_exist_on_the_input_model() -> None:
    with pytest.raises(DefinitionError, match=r"prompt uses \['missing'\]"):
        make(prompt=Prompt(system="s", user="$text $missing"))


def test_prompt_hash_changes_with_either_message() -> None:
    base = Prompt(system="a", user="b $text")
    assert base.content_hash == Prompt(system="a", user="b $text").content_hash
    assert base.content_hash != Prompt(system="a!", user="b $text").content_hash
    assert base.content_hash != Prompt(system="a", user="b! $text").content_hash


@pytest.mark.parametrize("name", ["Bad Name", "", "x" * 70, "9lives"])
def test_step_names_are_validated(name: str) -> None:
    with pytest.raises(DefinitionError, match="name must be"):
        make(name=name)


def test_models_must_be_pydantic() -> None:
    with pytest.raises(DefinitionError, match="output_model must be a pydantic BaseModel"):
        make(output_model=dict)
