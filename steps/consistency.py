"""How consistently a step answers the same input: the seed's "medium in 80% of instances, high
in 20%" measured, not guessed.

``probe_consistency`` runs one step N times on one input through the same step executor a
workflow uses (routing, retries, re-asks, fallbacks), at the step's configured sampling and,
for comparison, N more times at another temperature. Attempts stay in memory: no workflow
instance, no Prefect. ``history_disagreements`` does the same arithmetic over outputs already
stored, grouped by input digest.

Per output field (nested models flattened to dotted paths):

- choices (``Literal``, ``Enum``), booleans, numbers and other scalars: the agreement is the
  share of the N samples that gave the modal value;
- lists and dicts: compared as whole JSON values, the same way;
- free text: the number of distinct strings and the modal one's share. Text is reported but
  does not decide the verdict (two phrasings of one reason are not an inconsistency), unless
  the output has nothing but text.

A sample that failed (after its retries and re-asks) gave no value: it counts in N, so it
lowers every field's agreement. The verdict is consistent when each judged field's agreement
reaches the step's ``consistency_threshold``. This module prints nothing and stores nothing.
"""

from __future__ import annotations

import enum
import hashlib
import json
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from steps.definition import Prompt, Sampling, Step
from steps.errors import FailureClass, InputError, StepFailed
from steps.privacy import StepPrivacy

if TYPE_CHECKING:
    from steps.runtime import Clearance, MemorySink
    from steps.settings import Settings

__all__ = [
    "ENDPOINT_FAILURES",
    "ConsistencyReport",
    "FieldAgreement",
    "FieldKind",
    "HistoryGroup",
    "HistoryReport",
    "Series",
    "agreement_of",
    "field_kinds",
    "history_disagreements",
    "input_digest",
    "probe_consistency",
]

ENDPOINT_FAILURES = frozenset({FailureClass.CONNECTION, FailureClass.AUTH, FailureClass.QUOTA})
"""Failures that say nothing about the step's answers (no server, a refused key, a spent
quota): the probe stops at the first instead of counting N of them."""

_SHOWN_VALUES = 5
"""Distinct values kept per field, most common first (the rest are only counted)."""
_SHOWN_CHARS = 80
"""A text value is kept this long at most: enough to recognise it."""
_MAX_DEPTH = 8
"""How deep nested output models are flattened; deeper ones are compared as whole values."""


class FieldKind(StrEnum):
    CHOICE = "choice"
    """A ``Literal`` or an ``Enum``: the classification itself."""
    BOOLEAN = "boolean"
    NUMBER = "number"
    TEXT = "text"
    """Free text: distinct values counted, not judged (unless the output is all text)."""
    VALUE = "value"
    """Anything else (lists, dicts, unions, dates): compared as one whole JSON value."""


def input_digest(data: Any) -> str:
    """SHA-256 of a step input's canonical JSON (sorted keys, no spaces, UTF-8): the key under
    which two step runs count as the same input."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def field_kinds(model: type[BaseModel]) -> dict[str, FieldKind]:
    """Each leaf field of ``model`` by dotted path (``summary.risk_level``), with its kind."""
    found: dict[str, FieldKind] = {}
    _walk(model, "", found, 0)
    return found


def _walk(model: type[BaseModel], prefix: str, found: dict[str, FieldKind], depth: int) -> None:
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _model_in(info.annotation)
        if nested is not None and depth < _MAX_DEPTH:
            _walk(nested, f"{path}.", found, depth + 1)
        else:
            found[path] = _kind(info.annotation)


def _unwrapped(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``; a union of several stays as it is."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    inner = _unwrapped(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _kind(annotation: Any) -> FieldKind:
    inner = _unwrapped(annotation)
    if typing.get_origin(inner) is typing.Literal:
        return FieldKind.CHOICE
    if not isinstance(inner, type):
        return FieldKind.VALUE
    if issubclass(inner, enum.Enum):
        return FieldKind.CHOICE
    if issubclass(inner, bool):
        return FieldKind.BOOLEAN
    if issubclass(inner, int | float | Decimal):
        return FieldKind.NUMBER
    if issubclass(inner, str):
        return FieldKind.TEXT
    return FieldKind.VALUE


def _value_at(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _key(value: Any) -> str:
    """A value as canonical JSON, so that lists, dicts and 1 vs 1.0 compare as JSON does."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return value[: _SHOWN_CHARS - 1] + "…"
    if isinstance(value, list | dict):
        text = _key(value)
        return value if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
    return value


@dataclass(frozen=True)
class FieldAgreement:
    """How the samples agreed on one field."""

    path: str
    kind: FieldKind
    agreement: float
    """The modal value's count over all samples (failed ones included)."""
    distinct: int
    values: tuple[tuple[Any, int], ...]
    """The most common values (text shortened) with their counts, most common first."""

    @property
    def modal(self) -> Any:
        return self.values[0][0] if self.values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "agreement": round(self.agreement, 4),
            "distinct": self.distinct,
            "values": [[value, count] for value, count in self.values],
        }

    @classmethod
    def from_json(cls, path: str, data: Mapping[str, Any]) -> FieldAgreement:
        return cls(
            path=path,
            kind=FieldKind(data["kind"]),
            agreement=float(data["agreement"]),
            distinct=int(data["distinct"]),
            values=tuple((value, int(count)) for value, count in data.get("values", [])),
        )


def agreement_of(
    outputs: Iterable[Mapping[str, Any]], kinds: Mapping[str, FieldKind], samples: int
) -> tuple[FieldAgreement, ...]:
    """Per field of ``kinds``, how ``outputs`` (JSON dumps of the output model) agree, out of
    ``samples`` (more than the outputs when some samples failed)."""
    outputs = list(outputs)
    found = []
    for path, kind in kinds.items():
        counts: Counter[str] = Counter()
        first: dict[str, Any] = {}
        for output in outputs:
            value = _value_at(output, path)
            key = _key(value)
            counts[key] += 1
            first.setdefault(key, value)
        ranked = counts.most_common()
        modal = ranked[0][1] if ranked else 0
        found.append(
            FieldAgreement(
                path=path,
                kind=kind,
                agreement=modal / samples if samples else 0.0,
                distinct=len(ranked),
                values=tuple((_shown(first[key]), count) for key, count in ranked[:_SHOWN_VALUES]),
            )
        )
    return tuple(found)


def judged(fields: Iterable[FieldAgreement]) -> tuple[FieldAgreement, ...]:
    """The fields the verdict rests on: all but free text, or the text when that is all there is."""
    fields = tuple(fields)
    categorical = tuple(f for f in fields if f.kind is not FieldKind.TEXT)
    return categorical or fields


@dataclass(frozen=True)
class Series:
    """N samples of one step on one input at one sampling."""

    temperature: float | None
    """The temperature asked for (the step's effective one, or the comparison's)."""
    temperature_sent: bool
    """Whether every request carried it (Anthropic's SDK 2.x sends none)."""
    samples: int
    fields: tuple[FieldAgreement, ...]
    failures: dict[str, int]
    """Samples that failed after their retries and re-asks, by failure class."""
    models: dict[str, int]
    """Which catalog models answered, and how many samples each."""
    threshold: float

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def consistent(self) -> bool:
        return all(f.agreement >= self.threshold for f in judged(self.fields))

    @property
    def verdict(self) -> str:
        return "consistent" if self.consistent else "inconsistent"

    @property
    def lowest(self) -> FieldAgreement | None:
        """The judged field that agreed least."""
        return min(judged(self.fields), key=lambda f: f.agreement, default=None)

    def agreement_json(self) -> dict[str, Any]:
        return {f.path: f.as_json() for f in self.fields}

    def model_label(self) -> str:
        return ", ".join(model for model, _ in Counter(self.models).most_common()) or "(none answered)"


@dataclass(frozen=True)
class ConsistencyReport:
    step: str
    input_digest: str
    threshold: float
    configured: Series
    compared: Series | None = None
    prompt_version_id: str | None = None

    @property
    def consistent(self) -> bool:
        """The verdict at the step's configured sampling (the comparison only informs)."""
        return self.configured.consistent


def with_temperature(step: Step[Any, Any], temperature: float) -> Step[Any, Any]:
    """``step`` with its temperature overridden (its other sampling values kept)."""
    try:
        override = Sampling(temperature=temperature)
    except ValueError:
        raise InputError(f"--temperature must be between 0 and 2, got {temperature:g}") from None
    return replace(step, sampling=override.over(step.sampling))


def probe_consistency(
    settings: Settings,
    step: Step[Any, Any],
    inputs: BaseModel,
    samples: int,
    *,
    privacy: StepPrivacy,
    temperature: float | None = None,
    latency: Callable[[], Mapping[str, float]] | None = None,
    prompt_version: Callable[[str, Prompt], str] | None = None,
    on_sample: Callable[[float | None, int], None] | None = None,
) -> ConsistencyReport:
    """Run ``step`` on ``inputs`` ``samples`` times at its sampling (and as many at ``temperature``).

    ``privacy`` is the step's in its workflow: the input comes from a file, so a step that needs
    Declassified text stays on private models (``StepPrivacy.given_by_hand``).

    Raises ``InputError`` for a bad count or temperature, ``ConfigError`` when the step cannot
    be routed and ``StepFailed`` at the first endpoint failure (``ENDPOINT_FAILURES``).
    """
    from steps.runtime import Clearance, MemorySink, StepExecutor

    if samples < 2:
        raise InputError(f"--samples must be at least 2 to compare anything, got {samples}")
    compared_step = with_temperature(step, temperature) if temperature is not None else None
    executor = StepExecutor(settings, latency=latency)
    sink = MemorySink("consistency", prompt_version)
    try:
        clearance = Clearance(privacy.given_by_hand())
        configured = _series(executor, step, inputs, samples, sink, clearance, on_sample)
        compared = (
            _series(executor, compared_step, inputs, samples, sink, clearance, on_sample)
            if compared_step
            else None
        )
    finally:
        executor.close()
    return ConsistencyReport(
        step=step.name,
        input_digest=input_digest(inputs),
        threshold=step.consistency_threshold,
        configured=configured,
        compared=compared,
        prompt_version_id=sink.version_id,
    )


def _series(
    executor: Any,
    step: Step[Any, Any],
    inputs: BaseModel,
    samples: int,
    sink: MemorySink,
    clearance: Clearance,
    on_sample: Callable[[float | None, int], None] | None,
) -> Series:
    temperature = step.effective_sampling.temperature
    outputs: list[dict[str, Any]] = []
    failures: Counter[str] = Counter()
    models: Counter[str] = Counter()
    first = len(sink.finished)
    for number in range(1, samples + 1):
        if on_sample is not None:
            on_sample(temperature, number)
        try:
            output = executor.run(step, inputs, sink, clearance)
        except StepFailed as exc:
            if exc.failure in ENDPOINT_FAILURES:
                raise StepFailed(
                    f"cannot sample {step.name}: {exc.message}",
                    step=step.name,
                    failure=exc.failure,
                    model_id=exc.model_id,
                ) from None
            failures[exc.failure.value] += 1
            continue
        outputs.append(output.model_dump(mode="json"))
        answered = next((r for r in reversed(sink.finished) if r.ok), None)
        models[answered.model_id if answered else "?"] += 1
    records = sink.finished[first:]
    sent = bool(records) and all(r.sampling.get("temperature") == temperature for r in records)
    return Series(
        temperature=temperature,
        temperature_sent=sent,
        samples=samples,
        fields=agreement_of(outputs, field_kinds(step.output_model), samples),
        failures=dict(failures),
        models=dict(models),
        threshold=step.consistency_threshold,
    )


@dataclass(frozen=True)
class HistoryGroup:
    """Stored outputs of one step for one input digest."""

    digest: str
    input: Any
    """The step input itself (the JSON stored with its step runs), to probe it again."""
    runs: int
    fields: tuple[FieldAgreement, ...]
    models: dict[str, int] = field(default_factory=dict)

    @property
    def disagreeing(self) -> tuple[FieldAgreement, ...]:
        return tuple(f for f in judged(self.fields) if f.distinct > 1)


@dataclass(frozen=True)
class HistoryReport:
    outputs: int
    """Successful model answers of the step found."""
    inputs: int
    """Distinct input digests among them."""
    repeated: int
    """Digests answered more than once: the only ones that can disagree."""
    groups: tuple[HistoryGroup, ...]
    """The repeated digests whose judged fields disagree, most answers first."""


def history_disagreements(
    rows: Iterable[tuple[Any, Any, str]], output_model: type[BaseModel]
) -> HistoryReport:
    """Group ``(step input, model output, model id)`` rows by input digest; the groups whose
    judged fields got more than one value."""
    kinds = field_kinds(output_model)
    by_digest: dict[str, list[tuple[Any, str]]] = {}
    inputs: dict[str, Any] = {}
    outputs = 0
    for given, output, model_id in rows:
        if not isinstance(output, Mapping):  # an attempt still in flight has no output yet
            continue
        outputs += 1
        digest = input_digest(given)
        inputs.setdefault(digest, given)
        by_digest.setdefault(digest, []).append((output, model_id))
    groups = []
    repeated = 0
    for digest, answers in by_digest.items():
        if len(answers) < 2:
            continue
        repeated += 1
        group = HistoryGroup(
            digest=digest,
            input=inputs[digest],
            runs=len(answers),
            fields=agreement_of((output for output, _ in answers), kinds, len(answers)),
            models=dict(Counter(model_id for _, model_id in answers)),
        )
        if group.disagreeing:
            groups.append(group)
    groups.sort(key=lambda g: (-g.runs, g.digest))
    return HistoryReport(outputs=outputs, inputs=len(by_digest), repeated=repeated, groups=tuple(groups))
