"""Which data may reach a public model: decided from types and data flow, before anything runs.

A workflow **holds personal data** when its input model marks a field ``Personal[...]``, or one
of its steps is declared ``Sensitivity.PII``. In such a workflow, each field a step's prompt
renders (its ``$placeholders``) is judged by its declared type alone:

    cannot carry free text ... Literal, Enum, bool, None, numbers with both bounds, dates and
                               times, strings whose pattern the author names (``Code``), and
                               models, lists, dicts and unions made only of these
    declassified ............. ``Declassified`` text: text Stepline cleared (below)
    free text ................ anything else, a plain ``str`` above all: presumed personal

- A step that renders free text (or is declared pii) may run only on private models: the
  router never offers it another, fallbacks included. No model decides what is personal.
- Taint follows the data: that step's output fields that can carry free text are personal too.
- A step that renders nothing personal may run anywhere, and its free-text outputs come back as
  ``Declassified`` text; input fields not marked ``Personal`` are handed to the flow the same
  way. A later step that takes them in fields typed ``Declassified`` stays public, and so does
  a step that takes the workflow's own input and renders only its fields not marked Personal.
- Anything else is cleared only by a declassifier the workflow names (``steps.declassifiers``),
  run here, in the process: explicit, local, and recorded on every attempt that uses it.

``Declassified`` is a ``str`` subclass that only Stepline makes. Any operation on it (slicing,
formatting, joining, a model field typed plain ``str``) gives a plain ``str`` again, so text
derived from cleared text is not cleared: a mistake fails closed. Before each step runs, the
engine checks that every field the analysis counted as clean really holds such values
(``check_cleared``); ``steps.pii`` then checks each public request's bytes for the instance's
own personal values, as a second line.
"""

from __future__ import annotations

import collections.abc
import datetime as dt
import decimal
import functools
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from string import Template
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import BaseModel, GetCoreSchemaHandler, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

from steps.definition import Sensitivity, Step
from steps.errors import DefinitionError, StepLineError

__all__ = [
    "Carries",
    "Code",
    "Declassified",
    "FieldPrivacy",
    "NotCleared",
    "Origin",
    "Personal",
    "StepPrivacy",
    "WorkflowPrivacy",
    "analyse_workflow",
    "check_cleared",
    "clear_leaves",
]

T = TypeVar("T")


class _PersonalMarker:
    """The mark ``Personal[...]`` puts on a field (``Annotated`` metadata)."""

    def __repr__(self) -> str:
        return "Personal"


PERSONAL = _PersonalMarker()

Personal = Annotated[T, PERSONAL]
"""A workflow input field that carries personal data: ``message: Personal[str]``."""


@dataclass(frozen=True)
class Code:
    """A string shaped by a pattern the author names, so it cannot carry free text.

    ``order: Annotated[str, Code("order-number", r"^[A-Z]{2}-[0-9]{5}$")]``. The pattern is
    enforced (and sent in the output schema); its name is what ``stepline workflows`` shows.
    The author vouches that what fits it is not personal: a pattern alone is not that claim,
    so a plain ``Field(pattern=...)`` still counts as free text.
    """

    name: str
    pattern: str

    def __post_init__(self) -> None:
        if not (self.pattern.startswith("^") and self.pattern.endswith("$")):
            raise DefinitionError(
                f"Code({self.name!r}): the pattern must match the whole value, so start it with ^ "
                f"and end it with $ (got {self.pattern!r}): text around a partial match is free text"
            )

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.str_schema(pattern=self.pattern)


@dataclass(frozen=True)
class Origin:
    """Why a piece of text is cleared for public models."""

    kind: Literal["declassifier", "step", "input"]
    name: str

    def __str__(self) -> str:
        if self.kind == "declassifier":
            return f"declassifier {self.name}"
        if self.kind == "step":
            return f"step {self.name}, which saw no personal data"
        return f"input field {self.name}, not marked Personal"


_STRICT = {"stepline_cleared": True}
"""Validation context under which ``Declassified`` fields accept only cleared text."""


class Declassified(str):
    """Text cleared for public models; ``origin`` says why. Only Stepline makes it.

    As a field type it is what lets a step of a workflow holding personal data take free text
    and still run on public models. Outside a step run (a test building an input) a plain
    ``str`` is accepted; when a step runs, every such field must hold cleared text.
    """

    origin: Origin

    def __new__(cls, *args: Any, **kwargs: Any) -> Declassified:
        raise TypeError(
            "Declassified text is made by Stepline only: by a declassifier the workflow names "
            "(steps.declassifiers), or from a step or input field that holds no personal data"
        )

    def __repr__(self) -> str:
        return f"Declassified({str.__repr__(self)}, origin={str(self.origin)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_cleared, (str(self), self.origin))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        def check(value: Any, info: core_schema.ValidationInfo) -> str:
            if not isinstance(value, str):
                raise ValueError("must be text")
            if isinstance(value, Declassified) or not (info.context or {}).get("stepline_cleared"):
                return value
            raise ValueError("holds plain text, not Declassified text")

        return core_schema.with_info_plain_validator_function(
            check,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )


def _cleared(value: str, origin: Origin) -> Declassified:
    """The one way to make ``Declassified`` text (declassifiers and the engine call it)."""
    text = str.__new__(Declassified, value)
    text.origin = origin
    return text


def clear_leaves(value: Any, origin: Origin) -> Any:
    """``value`` (a model, list, dict or str) with every string in it cleared as ``origin``.

    Models are copied with ``model_copy`` (no validation): the values were validated already,
    and a ``str`` field keeps the ``Declassified`` object it is given this way.
    """
    if isinstance(value, Declassified):
        return value
    if isinstance(value, str) and not isinstance(value, Enum):
        return _cleared(value, origin)
    if isinstance(value, BaseModel):
        update = {name: clear_leaves(getattr(value, name), origin) for name in type(value).model_fields}
        return value.model_copy(update=update)
    if isinstance(value, list):
        return [clear_leaves(item, origin) for item in value]
    if isinstance(value, tuple):
        return tuple(clear_leaves(item, origin) for item in value)
    if isinstance(value, dict):
        return {key: clear_leaves(item, origin) for key, item in value.items()}
    return value


# Judging a type ------------------------------------------------------------------------------


class Carries(Enum):
    """What a field's declared type lets it carry, from safest to least safe."""

    NO_TEXT = 0
    DECLASSIFIED = 1
    TEXT = 2
    PERSONAL = 3

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Carries.NO_TEXT: "cannot carry free text",
    Carries.DECLASSIFIED: "declassified",
    Carries.TEXT: "free text",
    Carries.PERSONAL: "personal",
}


@dataclass(frozen=True)
class _Judgement:
    carries: Carries
    why: str
    """In words, for ``stepline workflows``: ``Literal``, ``a plain str``, ``marked Personal``."""
    options: frozenset[str] = frozenset()
    """Literal / Enum values: text every instance's request may carry (``steps.pii``)."""


def _worst(judgements: Sequence[_Judgement], why: str) -> _Judgement:
    if not judgements:
        return _Judgement(Carries.TEXT, f"{why} of unknown items")
    worst = max(judgements, key=lambda j: j.carries.value)
    options = frozenset().union(*(j.options for j in judgements))
    reason = worst.why if worst.carries is not Carries.NO_TEXT else why
    return _Judgement(worst.carries, reason, options)


_NUMBERS = (int, float, decimal.Decimal)
_TIMES = (dt.date, dt.time, dt.timedelta)  # datetime is a date
_SEQUENCES = {
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.Set,
    collections.abc.Collection,
    collections.abc.Iterable,
}
_MAPPINGS = {dict, collections.abc.Mapping}


def _bounded(metadata: Sequence[Any]) -> bool:
    low = any(isinstance(m, annotated_types.Ge | annotated_types.Gt) for m in metadata)
    high = any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in metadata)
    for m in metadata:
        if isinstance(m, annotated_types.Interval):
            low = low or m.ge is not None or m.gt is not None
            high = high or m.le is not None or m.lt is not None
    return low and high


def _judge(annotation: Any, metadata: Sequence[Any], seen: frozenset[type]) -> _Judgement:
    if any(isinstance(m, _PersonalMarker) for m in metadata):
        return _Judgement(Carries.PERSONAL, "marked Personal")
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return _judge(base, [*metadata, *extra], seen)
    if annotation is None or annotation is type(None):
        return _Judgement(Carries.NO_TEXT, "None")
    if origin is Literal:
        values = typing.get_args(annotation)
        return _Judgement(Carries.NO_TEXT, "a Literal", frozenset(str(v) for v in values))
    if origin is typing.Union or origin is types.UnionType:
        return _worst([_judge(a, metadata, seen) for a in typing.get_args(annotation)], "a union")
    if origin in _SEQUENCES:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return _worst([_judge(a, (), seen) for a in args], "a collection")
    if origin in _MAPPINGS:
        return _worst([_judge(a, (), seen) for a in typing.get_args(annotation)], "a mapping")
    if not isinstance(annotation, type):
        return _Judgement(Carries.TEXT, f"{annotation!r}, which Stepline cannot judge")
    if issubclass(annotation, Declassified):
        return _Judgement(Carries.DECLASSIFIED, "Declassified text")
    if issubclass(annotation, Enum):  # a closed set of values, whatever their type
        return _Judgement(
            Carries.NO_TEXT, f"the Enum {annotation.__name__}", frozenset(str(m.value) for m in annotation)
        )
    if issubclass(annotation, bool):
        return _Judgement(Carries.NO_TEXT, "a bool")
    if issubclass(annotation, _NUMBERS):
        if _bounded(metadata):
            return _Judgement(Carries.NO_TEXT, f"a bounded {annotation.__name__}")
        return _Judgement(
            Carries.TEXT,
            f"an {annotation.__name__} without both bounds (it can hold a phone or card number)",
        )
    if issubclass(annotation, _TIMES):
        return _Judgement(Carries.NO_TEXT, f"a {annotation.__name__}")
    if issubclass(annotation, str):
        code = next((m for m in metadata if isinstance(m, Code)), None)
        if code is not None:
            return _Judgement(Carries.NO_TEXT, f"the code {code.name!r}")
        return _Judgement(Carries.TEXT, "a plain str")
    if issubclass(annotation, BaseModel):
        if annotation in seen:  # a model that contains itself: judged where it first appears
            return _Judgement(Carries.NO_TEXT, f"the model {annotation.__name__}")
        inner = [_judge_field(info, seen | {annotation}) for info in annotation.model_fields.values()]
        judged = _worst(inner, f"the model {annotation.__name__}")
        if judged.carries is not Carries.NO_TEXT:
            name = next(
                n for n, j in zip(annotation.model_fields, inner, strict=True) if j.carries is judged.carries
            )
            return _Judgement(judged.carries, f"{annotation.__name__}.{name}: {judged.why}", judged.options)
        return judged
    return _Judgement(Carries.TEXT, f"a {annotation.__name__}, which Stepline cannot judge")


def _judge_field(info: FieldInfo, seen: frozenset[type] = frozenset()) -> _Judgement:
    return _judge(info.annotation, info.metadata, seen)


# Steps and workflows ------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldPrivacy:
    """One field a step's prompt renders, as its type judges it."""

    name: str
    carries: Carries
    why: str
    options: frozenset[str] = frozenset()
    by_source: bool = False
    """Clean by where it comes from (an input field not marked Personal), not by its type: its
    text must arrive ``Declassified``, as the engine hands that input over."""

    def describe(self) -> str:
        return f"${self.name} ({self.carries.label}: {self.why})"


@dataclass(frozen=True)
class StepPrivacy:
    """Where one step may run, and why, decided before its first request."""

    step: str
    prompt_hash: str
    private_reason: str | None
    """Why only private models may serve it; ``None``: any model may."""
    rendered: tuple[FieldPrivacy, ...]
    """The fields its prompt renders, in the order they appear."""
    personal_outputs: tuple[str, ...] = ()
    """Its output fields that carry personal data (it saw some): the guard learns their values."""
    holds_personal_data: bool = False
    """Its workflow holds personal data: its inputs are checked and its outputs labelled."""

    @property
    def private_only(self) -> bool:
        return self.private_reason is not None

    @property
    def declassified(self) -> tuple[str, ...]:
        """Rendered fields that take ``Declassified`` text."""
        return tuple(f.name for f in self.rendered if f.carries is Carries.DECLASSIFIED)

    @property
    def options(self) -> frozenset[str]:
        """The Literal / Enum values its rendered fields may take (the same for every instance)."""
        return frozenset().union(*(f.options for f in self.rendered))

    def summary(self) -> str:
        """One line for ``stepline workflows`` and ``validate``."""
        if self.private_reason is not None:
            return f"private models only: {self.private_reason}"
        if not self.holds_personal_data:
            return "any model: its workflow holds no personal data"
        clean = ", ".join(f.describe() for f in self.rendered) or "no fields"
        return f"any model: it renders {clean}"

    def given_by_hand(self) -> StepPrivacy:
        """This step run on an input from a file (``stepline consistency``): text in its
        Declassified fields was never cleared, so where it needs cleared text it stays private."""
        if not self.holds_personal_data or self.private_only or not self.declassified:
            return self
        fields = ", $".join(self.declassified)
        return replace(self, private_reason=f"${fields} comes from a file here, not from a declassifier")

    @classmethod
    def alone(cls, step: Step[Any, Any]) -> StepPrivacy:
        """A step judged outside any workflow (``stepline probe``): only its own declaration."""
        return _judge_step(step, holds_personal=step.sensitivity is Sensitivity.PII)


@dataclass(frozen=True)
class WorkflowPrivacy:
    """The privacy analysis of one workflow: computed when it is built, shown before it runs."""

    personal_inputs: tuple[str, ...]
    """Input fields that carry personal data (``Personal``, or every free-text one when only a
    pii step says the workflow holds personal data)."""
    holds_personal_data: bool
    steps: Mapping[str, StepPrivacy]
    note: str | None = None
    """Something the author should know (no input marked Personal beside a pii step)."""
    own_input: tuple[type[BaseModel], frozenset[str]] | None = field(default=None, compare=False, repr=False)
    _edited: dict[tuple[str, str], StepPrivacy] = field(default_factory=dict, compare=False, repr=False)

    def of(self, step: Step[Any, Any]) -> StepPrivacy:
        """``step``'s privacy with the prompt it runs with now (an operator may have edited it)."""
        known = self.steps[step.name]
        if known.prompt_hash == step.prompt.content_hash:
            return known
        key = (step.name, step.prompt.content_hash)
        found = self._edited.get(key)
        if found is None:
            found = self._edited[key] = _judge_step(
                step, holds_personal=self.holds_personal_data, own_input=self.own_input
            )
        return found


def analyse_workflow(
    name: str, input_model: type[BaseModel], steps: Sequence[Step[Any, Any]]
) -> WorkflowPrivacy:
    """Judge every step of a workflow (``Workflow`` does this when it is built)."""
    judged = {field_name: _judge_field(info) for field_name, info in input_model.model_fields.items()}
    personal = tuple(n for n, j in judged.items() if j.carries is Carries.PERSONAL)
    declared = [step.name for step in steps if step.sensitivity is Sensitivity.PII]
    note = None
    if declared and not personal:
        personal = tuple(n for n, j in judged.items() if j.carries is Carries.TEXT)
        note = (
            f"workflow {name!r}: step {declared[0]!r} is pii but no field of "
            f"{input_model.__name__} is marked Personal, so every free-text input field is treated "
            "as personal; mark the ones that are (message: Personal[str]) to hand the others on"
        )
    holds = bool(personal) or bool(declared)
    own_input = (input_model, frozenset(personal))
    return WorkflowPrivacy(
        personal_inputs=personal,
        holds_personal_data=holds,
        steps={step.name: _judge_step(step, holds_personal=holds, own_input=own_input) for step in steps},
        note=note,
        own_input=own_input,
    )


def _placeholders_in_order(template: str) -> list[str]:
    return list(dict.fromkeys(Template(template).get_identifiers()))


def _judge_step(
    step: Step[Any, Any],
    *,
    holds_personal: bool,
    own_input: tuple[type[BaseModel], frozenset[str]] | None = None,
) -> StepPrivacy:
    """``own_input``: the workflow's input model and its personal fields. A step that takes that
    model as it is gets its other fields as the engine handed them over: cleared."""
    fields = step.input_model.model_fields
    rendered = []
    for name in _placeholders_in_order(step.prompt.user):
        judged = _judge_field(fields[name])
        field_privacy = FieldPrivacy(name, judged.carries, judged.why, judged.options)
        if (
            own_input is not None
            and step.input_model is own_input[0]
            and name not in own_input[1]
            and judged.carries is Carries.TEXT
        ):
            field_privacy = FieldPrivacy(
                name,
                Carries.DECLASSIFIED,
                "an input field not marked Personal",
                judged.options,
                by_source=True,
            )
        rendered.append(field_privacy)
    reason: str | None = None
    if step.sensitivity is Sensitivity.PII:
        reason = "the step is declared pii"
    elif holds_personal:
        unsafe = [f for f in rendered if f.carries in (Carries.TEXT, Carries.PERSONAL)]
        if unsafe:
            reason = "its prompt renders " + ", ".join(f.describe() for f in unsafe)
    personal_outputs: tuple[str, ...] = ()
    if reason is not None:
        personal_outputs = tuple(
            n
            for n, info in step.output_model.model_fields.items()
            if _judge_field(info).carries is not Carries.NO_TEXT
        )
    return StepPrivacy(
        step=step.name,
        prompt_hash=step.prompt.content_hash,
        private_reason=reason,
        rendered=tuple(rendered),
        personal_outputs=personal_outputs,
        holds_personal_data=holds_personal,
    )


# At run time --------------------------------------------------------------------------------


class NotCleared(StepLineError):
    """A field the analysis counted as clean holds something else: the step is not sent.

    The message names the step and fields and what they should hold, never their values.
    """


@functools.cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    if not info.metadata:
        return TypeAdapter(info.annotation or Any)
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)])  # type: ignore[arg-type]


def check_cleared(privacy: StepPrivacy, inputs: BaseModel, declassifiers: frozenset[str]) -> dict[str, str]:
    """Check that each rendered field counted as clean holds what its type promises; return, per
    field holding ``Declassified`` text, what cleared it (for the attempt row).

    Every such field is validated again against its declared type with only cleared text
    accepted (an input built with ``model_construct`` skipped validation once), and cleared text
    made by a declassifier must come from one its workflow names.
    """
    cleared: dict[str, str] = {}
    problems: list[str] = []
    model = type(inputs)
    for rendered in privacy.rendered:
        if rendered.carries not in (Carries.NO_TEXT, Carries.DECLASSIFIED):
            continue  # free text: the step is private-only, its inputs may hold anything
        value = inputs.model_dump(include={rendered.name})[rendered.name]
        try:
            _adapter(model, rendered.name).validate_python(value, context=_STRICT)
        except ValidationError as exc:
            where = sorted({".".join(str(p) for p in (rendered.name, *e["loc"])) for e in exc.errors()})
            problems.append(
                f"${', $'.join(where)} must hold {rendered.why} but does not (not Declassified text, "
                "or a value outside its type)"
            )
            continue
        if rendered.by_source and any(
            not isinstance(text, Declassified) for text in _strings_in(value) if not isinstance(text, Enum)
        ):
            problems.append(
                f"${rendered.name} must hold the workflow's own input as it was handed over, "
                "but holds other text"
            )
            continue
        origins = sorted({str(text.origin) for text in _declassified_in(value)})
        unnamed = sorted(
            {t.origin.name for t in _declassified_in(value) if t.origin.kind == "declassifier"}
            - declassifiers
        )
        if unnamed:
            problems.append(
                f"${rendered.name} was cleared by declassifier {unnamed[0]!r}, which its workflow "
                "does not name: add it to Workflow(declassifiers=...)"
            )
        elif origins:
            cleared[rendered.name] = "; ".join(origins)
    if problems:
        raise NotCleared(
            f"step {privacy.step!r} was not sent: " + "; ".join(problems) + ". Build those fields from "
            "a declassifier the workflow names, or from a step or input field that holds no personal "
            "data, and keep their type Declassified"
        )
    return cleared


def _strings_in(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _declassified_in(value: Any) -> Iterator[Declassified]:
    return (text for text in _strings_in(value) if isinstance(text, Declassified))
